-- Every table beside the ledger, the same as on SQLite (migrations/sqlite
-- 0001 and 0004..0013, in their final shape): integers are BIGINT, flags
-- are 0/1 integers, report amounts (prices, statistics, tip totals) are
-- decimal text as there; the ledger's own amounts stay NUMERIC.

-- The dialects agree on flags: 0/1 integers, as on SQLite.
ALTER TABLE auth_tokens ALTER COLUMN revoked DROP DEFAULT;
ALTER TABLE auth_tokens ALTER COLUMN revoked TYPE SMALLINT USING (CASE WHEN revoked THEN 1 ELSE 0 END);
ALTER TABLE auth_tokens ALTER COLUMN revoked SET DEFAULT 0;
ALTER TABLE auth_tokens ADD CHECK (revoked IN (0, 1));
CREATE INDEX auth_challenges_expiry ON auth_challenges (expires_at_ms);

-- SQLite's instr(haystack, needle): the position of needle, 0 when absent.
CREATE FUNCTION instr(haystack TEXT, needle TEXT) RETURNS INTEGER
LANGUAGE SQL IMMUTABLE STRICT AS $$ SELECT strpos(haystack, needle) $$;

CREATE TABLE streams (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    stream_key TEXT NOT NULL UNIQUE,
    owner TEXT,
    state TEXT NOT NULL CHECK (state IN ('idle', 'live', 'ended')),
    created_at_ms BIGINT NOT NULL,
    started_at_ms BIGINT,
    ended_at_ms BIGINT,
    source_width BIGINT,
    source_height BIGINT,
    end_error TEXT,
    access TEXT NOT NULL DEFAULT 'free' CHECK (access IN ('free', 'per_second')),
    price_amount TEXT,
    price_period_seconds BIGINT,
    preview_seconds BIGINT NOT NULL DEFAULT 0 CHECK (preview_seconds >= 0),
    retention_days BIGINT CHECK (retention_days IS NULL OR retention_days > 0),
    expired_at_ms BIGINT,
    archive_public SMALLINT NOT NULL DEFAULT 0 CHECK (archive_public IN (0, 1)),
    description TEXT NOT NULL DEFAULT '',
    category TEXT,
    tags TEXT NOT NULL DEFAULT ''
);
CREATE INDEX streams_category ON streams (category);

CREATE TABLE renditions (
    stream_id TEXT NOT NULL REFERENCES streams (id),
    name TEXT NOT NULL,
    position BIGINT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('video', 'audio')),
    width BIGINT,
    height BIGINT,
    bandwidth_bps BIGINT NOT NULL,
    codecs TEXT NOT NULL,
    init_cid TEXT,
    init_size BIGINT,
    PRIMARY KEY (stream_id, name)
);
CREATE INDEX renditions_init_cid ON renditions (init_cid);

CREATE TABLE segments (
    stream_id TEXT NOT NULL,
    rendition TEXT NOT NULL,
    sequence BIGINT NOT NULL CHECK (sequence >= 0),
    duration_ms BIGINT NOT NULL CHECK (duration_ms >= 0),
    size BIGINT NOT NULL CHECK (size >= 0),
    cid TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (stream_id, rendition, sequence),
    FOREIGN KEY (stream_id, rendition) REFERENCES renditions (stream_id, name)
);
CREATE INDEX segments_cid ON segments (cid);

CREATE TABLE stream_viewers (
    stream_id TEXT NOT NULL REFERENCES streams (id),
    viewer TEXT NOT NULL,
    first_session_ms BIGINT NOT NULL,
    sessions BIGINT NOT NULL DEFAULT 0 CHECK (sessions >= 0),
    paid_media_ms BIGINT NOT NULL DEFAULT 0 CHECK (paid_media_ms >= 0),
    gross TEXT NOT NULL DEFAULT '0',
    net TEXT NOT NULL DEFAULT '0',
    fee TEXT NOT NULL DEFAULT '0',
    PRIMARY KEY (stream_id, viewer)
);

CREATE TABLE archives (
    root_cid TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL REFERENCES streams (id),
    segments BIGINT NOT NULL CHECK (segments >= 0),
    complete SMALLINT NOT NULL DEFAULT 0 CHECK (complete IN (0, 1)),
    car_size BIGINT NOT NULL CHECK (car_size >= 0),
    piece_cid TEXT NOT NULL,
    piece_size BIGINT NOT NULL CHECK (piece_size > 0),
    built_at_ms BIGINT NOT NULL
);
CREATE INDEX archives_stream ON archives (stream_id, segments);
CREATE INDEX archives_complete ON archives (complete, stream_id);

CREATE TABLE archive_blocks (
    cid TEXT NOT NULL,
    root_cid TEXT NOT NULL REFERENCES archives (root_cid),
    PRIMARY KEY (cid, root_cid)
);

CREATE TABLE archive_replicas (
    root_cid TEXT NOT NULL REFERENCES archives (root_cid),
    target TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'stored', 'verified', 'failed')),
    attempts BIGINT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error TEXT,
    updated_at_ms BIGINT NOT NULL,
    next_attempt_ms BIGINT NOT NULL,
    PRIMARY KEY (root_cid, target)
);
CREATE INDEX archive_replicas_due ON archive_replicas (next_attempt_ms);

-- `rowid` is the insertion order, as SQLite's implicit column of that name.
CREATE TABLE chat_messages (
    rowid BIGSERIAL NOT NULL UNIQUE,
    id TEXT PRIMARY KEY NOT NULL,
    stream_id TEXT NOT NULL REFERENCES streams (id),
    author TEXT NOT NULL,
    body TEXT NOT NULL,
    tip_amount TEXT,
    created_at_ms BIGINT NOT NULL,
    deleted SMALLINT NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1))
);
CREATE INDEX chat_messages_by_stream ON chat_messages (stream_id, created_at_ms);
CREATE TABLE chat_mutes (
    stream_id TEXT NOT NULL REFERENCES streams (id),
    address TEXT NOT NULL,
    muted_at_ms BIGINT NOT NULL,
    PRIMARY KEY (stream_id, address)
);

CREATE TABLE stream_tips (
    tip_id TEXT PRIMARY KEY NOT NULL,
    stream_id TEXT NOT NULL REFERENCES streams (id),
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE stream_tip_totals (
    stream_id TEXT PRIMARY KEY NOT NULL REFERENCES streams (id),
    tips BIGINT NOT NULL,
    gross TEXT NOT NULL,
    creator TEXT NOT NULL,
    fee TEXT NOT NULL
);
