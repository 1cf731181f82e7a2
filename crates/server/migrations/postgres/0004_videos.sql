-- Uploaded videos: streams whose media comes from a file, transcoded by a
-- persistent job queue (a restart starts interrupted jobs again).
ALTER TABLE streams ADD COLUMN source TEXT NOT NULL DEFAULT 'live' CHECK (source IN ('live', 'upload'));
ALTER TABLE streams ADD COLUMN duration_ms BIGINT;
CREATE TABLE video_jobs (
    stream_id TEXT PRIMARY KEY REFERENCES streams(id),
    upload_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'done', 'failed', 'cancelled')),
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX video_jobs_state ON video_jobs (state, created_at_ms);
