-- Events (a scheduled live show with its own stream, access 'ticket'),
-- their tickets, the tips on their leaderboard, the collectible minted at
-- finalization with its owners, and market listings. Amounts are decimal
-- text of base units; the money itself is in the ledger (the event's
-- account holds ticket money: sold - refunded - released).
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL UNIQUE REFERENCES streams (id),
    creator TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    category TEXT,
    starts_at_ms BIGINT NOT NULL,
    duration_seconds BIGINT NOT NULL CHECK (duration_seconds > 0),
    ticket_price TEXT NOT NULL,
    ticket_supply BIGINT NOT NULL CHECK (ticket_supply > 0),
    per_wallet BIGINT NOT NULL CHECK (per_wallet > 0),
    sale_ends_at_ms BIGINT NOT NULL,
    resale_max_bps BIGINT NOT NULL CHECK (resale_max_bps >= 0 AND resale_max_bps <= 65535),
    royalty_bps BIGINT NOT NULL CHECK (royalty_bps >= 0 AND royalty_bps <= 10000),
    state TEXT NOT NULL CHECK (state IN ('scheduled', 'live', 'ended', 'finalized', 'cancelled')),
    tickets_sold BIGINT NOT NULL DEFAULT 0 CHECK (tickets_sold >= 0 AND tickets_sold <= ticket_supply),
    released TEXT NOT NULL DEFAULT '0',
    delivered_ms BIGINT,
    went_live_at_ms BIGINT,
    ended_at_ms BIGINT,
    closed_at_ms BIGINT,
    leaderboard TEXT,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX events_state ON events (state, starts_at_ms);

CREATE TABLE tickets (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL REFERENCES events (id),
    purchase_id TEXT NOT NULL,
    buyer TEXT NOT NULL,
    owner TEXT NOT NULL,
    price_paid TEXT NOT NULL,
    face_price TEXT NOT NULL,
    refunded TEXT NOT NULL DEFAULT '0',
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX tickets_event_buyer ON tickets (event_id, buyer);
CREATE INDEX tickets_owner ON tickets (owner, event_id);
CREATE INDEX tickets_purchase ON tickets (purchase_id);

CREATE TABLE event_tips (
    tip_id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL REFERENCES events (id),
    tipper TEXT NOT NULL,
    amount TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX event_tips_event ON event_tips (event_id, at_ms);

CREATE TABLE collectibles (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE REFERENCES events (id),
    creator TEXT NOT NULL,
    owner TEXT NOT NULL,
    royalty_bps BIGINT NOT NULL CHECK (royalty_bps >= 0 AND royalty_bps <= 10000),
    archive_root_cid TEXT,
    metadata_cid TEXT NOT NULL,
    minted_at_ms BIGINT NOT NULL
);
CREATE INDEX collectibles_owner ON collectibles (owner);
CREATE TABLE collectible_owners (
    collectible_id TEXT NOT NULL REFERENCES collectibles (id),
    seq BIGINT NOT NULL,
    owner TEXT NOT NULL,
    since_ms BIGINT NOT NULL,
    price TEXT,
    PRIMARY KEY (collectible_id, seq)
);

CREATE TABLE listings (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('collectible', 'ticket')),
    item_id TEXT NOT NULL,
    event_id TEXT NOT NULL REFERENCES events (id),
    seller TEXT NOT NULL,
    price TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'sold', 'withdrawn')),
    buyer TEXT,
    created_at_ms BIGINT NOT NULL,
    closed_at_ms BIGINT
);
-- One open listing per item.
CREATE UNIQUE INDEX listings_open_item ON listings (kind, item_id) WHERE state = 'open';
CREATE INDEX listings_state ON listings (state, created_at_ms);

ALTER TABLE streams DROP CONSTRAINT streams_access_check;
ALTER TABLE streams ADD CONSTRAINT streams_access_check CHECK (access IN ('free', 'per_second', 'ticket', 'members'));
