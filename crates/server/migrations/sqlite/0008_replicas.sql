-- Replicas of archives (a CAR per target). States: pending (to write),
-- stored (written, not yet read back), verified (read back, every block and
-- the Piece CID checked), failed (missing or corrupt, or the write failed:
-- retried with backoff). `next_attempt_ms` is when to write or re-verify next.
CREATE TABLE archive_replicas (
    root_cid TEXT NOT NULL REFERENCES archives (root_cid),
    target TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'stored', 'verified', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error TEXT,
    updated_at_ms INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL,
    PRIMARY KEY (root_cid, target)
) WITHOUT ROWID;
CREATE INDEX archive_replicas_due ON archive_replicas (next_attempt_ms);
