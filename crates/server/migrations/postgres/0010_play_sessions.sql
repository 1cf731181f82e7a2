-- Paid sessions as they started, so that another node of a cluster picks
-- one up when the node that started it is gone (its meter resumes from the
-- channel's redeemed amount).
CREATE TABLE play_sessions (
    id TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL,
    viewer TEXT NOT NULL,
    channel TEXT NOT NULL,
    meter TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX play_sessions_created ON play_sessions (created_at_ms);
