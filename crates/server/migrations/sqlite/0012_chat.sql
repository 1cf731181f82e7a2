-- Chat rooms, one per stream: messages (tips carry their amount) and the
-- accounts a creator muted in their room.
CREATE TABLE chat_messages (
    id TEXT PRIMARY KEY NOT NULL,
    stream_id TEXT NOT NULL REFERENCES streams (id),
    author TEXT NOT NULL,
    body TEXT NOT NULL,
    tip_amount TEXT,
    created_at_ms INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1))
);
CREATE INDEX chat_messages_by_stream ON chat_messages (stream_id, created_at_ms);
CREATE TABLE chat_mutes (
    stream_id TEXT NOT NULL REFERENCES streams (id),
    address TEXT NOT NULL,
    muted_at_ms INTEGER NOT NULL,
    PRIMARY KEY (stream_id, address)
);
