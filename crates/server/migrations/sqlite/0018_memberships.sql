-- Memberships: tiers offered by the platform or a creator, one membership
-- per member and offerer, every payment recorded (platform-tier payments
-- feed the round's pool), what members were served per round (engagement),
-- where they are in what they watch, and the pool's closed rounds.
CREATE TABLE tiers (
    id TEXT PRIMARY KEY,
    -- 'platform' or the creator's address.
    offerer TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    price TEXT NOT NULL,
    period_seconds BIGINT NOT NULL CHECK (period_seconds > 0),
    max_height BIGINT NOT NULL CHECK (max_height IN (360, 480, 720, 1080)),
    max_streams BIGINT NOT NULL CHECK (max_streams >= 1),
    suspended SMALLINT NOT NULL DEFAULT 0 CHECK (suspended IN (0, 1)),
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX tiers_offerer ON tiers (offerer);

CREATE TABLE memberships (
    id TEXT PRIMARY KEY,
    member TEXT NOT NULL,
    offerer TEXT NOT NULL,
    tier_id TEXT NOT NULL REFERENCES tiers (id),
    -- A downgrade waits for the next renewal.
    next_tier_id TEXT REFERENCES tiers (id),
    expires_at_ms BIGINT NOT NULL,
    auto_renew SMALLINT NOT NULL CHECK (auto_renew IN (0, 1)),
    renewal_failure TEXT,
    renewal_failed_at_ms BIGINT,
    created_at_ms BIGINT NOT NULL,
    UNIQUE (member, offerer)
);
CREATE INDEX memberships_expiry ON memberships (auto_renew, expires_at_ms);

CREATE TABLE membership_payments (
    id TEXT PRIMARY KEY,
    membership_id TEXT NOT NULL REFERENCES memberships (id),
    member TEXT NOT NULL,
    tier_id TEXT NOT NULL REFERENCES tiers (id),
    kind TEXT NOT NULL CHECK (kind IN ('join', 'renewal', 'upgrade')),
    amount TEXT NOT NULL,
    -- The part paid into the pool (platform tiers), and its round.
    pool_amount TEXT NOT NULL DEFAULT '0',
    round BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX membership_payments_round ON membership_payments (round, member);

CREATE TABLE member_watch (
    round BIGINT NOT NULL,
    member TEXT NOT NULL,
    stream_id TEXT NOT NULL REFERENCES streams (id),
    served_ms BIGINT NOT NULL CHECK (served_ms >= 0),
    furthest_ms BIGINT NOT NULL CHECK (furthest_ms >= 0),
    PRIMARY KEY (round, member, stream_id)
);

CREATE TABLE watch_progress (
    member TEXT NOT NULL,
    stream_id TEXT NOT NULL REFERENCES streams (id),
    position_ms BIGINT NOT NULL CHECK (position_ms >= 0),
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (member, stream_id)
);
CREATE INDEX watch_progress_recent ON watch_progress (member, updated_at_ms);

CREATE TABLE pool_rounds (
    round BIGINT PRIMARY KEY,
    starts_at_ms BIGINT NOT NULL,
    ends_at_ms BIGINT NOT NULL,
    contributions TEXT NOT NULL,
    view_inflow TEXT NOT NULL,
    carry_in TEXT NOT NULL,
    carry_out TEXT NOT NULL,
    mode TEXT NOT NULL CHECK (mode IN ('user-centric', 'pro-rata')),
    statement_cid TEXT NOT NULL,
    closed_at_ms BIGINT NOT NULL
);
CREATE TABLE pool_allocations (
    round BIGINT NOT NULL REFERENCES pool_rounds (round),
    creator TEXT NOT NULL,
    amount TEXT NOT NULL,
    PRIMARY KEY (round, creator)
);
CREATE INDEX pool_allocations_creator ON pool_allocations (creator, round);

-- A members stream's tiers (JSON list of tier ids, or "platform").
ALTER TABLE streams ADD COLUMN member_tiers TEXT NOT NULL DEFAULT '[]';
