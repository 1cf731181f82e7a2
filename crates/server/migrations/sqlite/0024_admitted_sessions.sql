-- Sessions admitted without paying per segment (a ticket, a membership, the
-- host), written on clustered nodes: any node serves them, a member's
-- sessions are counted across nodes, and a session ended on one node ends
-- everywhere. `last_seen_ms` lags a node's own by its flush interval.
CREATE TABLE admitted_sessions (
    id TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL,
    viewer TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('ticket', 'host', 'member')),
    ticket_id TEXT,
    max_height BIGINT,
    expires_at_ms BIGINT,
    last_seen_ms BIGINT NOT NULL,
    ended SMALLINT NOT NULL DEFAULT 0 CHECK (ended IN (0, 1)),
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX admitted_sessions_viewer ON admitted_sessions (viewer, kind, ended);
CREATE INDEX admitted_sessions_ticket ON admitted_sessions (ticket_id);
CREATE INDEX admitted_sessions_created ON admitted_sessions (created_at_ms);
