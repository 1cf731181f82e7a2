-- Plays started per stream or video, for "most watched".
ALTER TABLE streams ADD COLUMN views INTEGER NOT NULL DEFAULT 0;
CREATE INDEX streams_views ON streams (views DESC, created_at_ms DESC);
