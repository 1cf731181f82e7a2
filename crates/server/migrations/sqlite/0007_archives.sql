-- Every archive root built for a stream (a live stream's archive grows, so a
-- stream may have several), with the numbers of its CAR. The gateway finds a
-- root's stream here to apply the stream's access rules. `complete` marks the
-- archive of an ended stream's whole recording (the one replicated).
CREATE TABLE archives (
    root_cid TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL REFERENCES streams (id),
    segments INTEGER NOT NULL CHECK (segments >= 0),
    complete INTEGER NOT NULL DEFAULT 0 CHECK (complete IN (0, 1)),
    car_size INTEGER NOT NULL CHECK (car_size >= 0),
    piece_cid TEXT NOT NULL,
    piece_size INTEGER NOT NULL CHECK (piece_size > 0),
    built_at_ms INTEGER NOT NULL
);
CREATE INDEX archives_stream ON archives (stream_id, segments);
CREATE INDEX archives_complete ON archives (complete, stream_id);

-- Blocks an archive adds beside the stored media (directory nodes, playlists),
-- so the gateway serves them by their own CIDs under the stream's rules.
CREATE TABLE archive_blocks (
    cid TEXT NOT NULL,
    root_cid TEXT NOT NULL REFERENCES archives (root_cid),
    PRIMARY KEY (cid, root_cid)
) WITHOUT ROWID;
