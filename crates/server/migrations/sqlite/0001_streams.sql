-- Streams, their renditions and segments. Segment bytes live in the
-- blockstore under `cid`; these rows are the index.
CREATE TABLE streams (
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
    end_error TEXT
);

CREATE TABLE renditions (
    stream_id TEXT NOT NULL REFERENCES streams (id),
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('video', 'audio')),
    width INTEGER,
    height INTEGER,
    bandwidth_bps INTEGER NOT NULL,
    codecs TEXT NOT NULL,
    init_cid TEXT,
    init_size INTEGER,
    PRIMARY KEY (stream_id, name)
);

CREATE TABLE segments (
    stream_id TEXT NOT NULL,
    rendition TEXT NOT NULL,
    sequence INTEGER NOT NULL CHECK (sequence >= 0),
    duration_ms INTEGER NOT NULL CHECK (duration_ms >= 0),
    size INTEGER NOT NULL CHECK (size >= 0),
    cid TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (stream_id, rendition, sequence),
    FOREIGN KEY (stream_id, rendition) REFERENCES renditions (stream_id, name)
);
