-- Watch statistics per stream and viewer (GET /api/v1/streams/{id}/stats).
-- Amounts are decimal strings of base units, as everywhere else; the ledger
-- holds the money itself, these rows are a report of it per stream.
CREATE TABLE stream_viewers (
    stream_id TEXT NOT NULL REFERENCES streams (id),
    viewer TEXT NOT NULL,
    first_session_ms INTEGER NOT NULL,
    sessions INTEGER NOT NULL DEFAULT 0 CHECK (sessions >= 0),
    paid_media_ms INTEGER NOT NULL DEFAULT 0 CHECK (paid_media_ms >= 0),
    gross TEXT NOT NULL DEFAULT '0',
    net TEXT NOT NULL DEFAULT '0',
    fee TEXT NOT NULL DEFAULT '0',
    PRIMARY KEY (stream_id, viewer)
) WITHOUT ROWID;
