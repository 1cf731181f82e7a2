-- A publisher may continue a live stream on another node when the node
-- ingesting it is gone: `ingest_seen_ms` is the ingesting node's last sign
-- of life for the stream, and a segment that begins after such a restart
-- names the init file it needs (the playlist marks a discontinuity there).
ALTER TABLE streams ADD COLUMN ingest_seen_ms INTEGER;
ALTER TABLE segments ADD COLUMN init_cid TEXT;
