-- no-transaction
-- Streams may be watched by ticket (an event's room) or by members of a
-- tier: the access check gains 'ticket' and 'members' (whose rules come
-- with memberships). SQLite cannot alter a CHECK, so the table is rebuilt
-- (SQLite's documented procedure: foreign keys off, copy, swap, check).
PRAGMA foreign_keys = OFF;
BEGIN;
CREATE TABLE streams_new (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    stream_key TEXT NOT NULL UNIQUE,
    owner TEXT,
    state TEXT NOT NULL CHECK (state IN ('idle', 'live', 'ended')),
    created_at_ms INTEGER NOT NULL,
    started_at_ms INTEGER,
    ended_at_ms INTEGER,
    source_width INTEGER,
    source_height INTEGER,
    end_error TEXT,
    access TEXT NOT NULL DEFAULT 'free' CHECK (access IN ('free', 'per_second', 'ticket', 'members')),
    price_amount TEXT,
    price_period_seconds INTEGER,
    preview_seconds INTEGER NOT NULL DEFAULT 0 CHECK (preview_seconds >= 0),
    retention_days INTEGER CHECK (retention_days IS NULL OR retention_days > 0),
    expired_at_ms INTEGER,
    archive_public INTEGER NOT NULL DEFAULT 0 CHECK (archive_public IN (0, 1)),
    description TEXT NOT NULL DEFAULT '',
    category TEXT,
    tags TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT 'live' CHECK (source IN ('live', 'upload')),
    duration_ms INTEGER
);
INSERT INTO streams_new (id, title, stream_key, owner, state, created_at_ms, started_at_ms,
    ended_at_ms, source_width, source_height, end_error, access, price_amount,
    price_period_seconds, preview_seconds, retention_days, expired_at_ms, archive_public,
    description, category, tags, source, duration_ms)
SELECT id, title, stream_key, owner, state, created_at_ms, started_at_ms,
    ended_at_ms, source_width, source_height, end_error, access, price_amount,
    price_period_seconds, preview_seconds, retention_days, expired_at_ms, archive_public,
    description, category, tags, source, duration_ms
FROM streams;
DROP TABLE streams;
ALTER TABLE streams_new RENAME TO streams;
CREATE INDEX streams_category ON streams (category);
COMMIT;
PRAGMA foreign_key_check;
PRAGMA foreign_keys = ON;
