-- Credits committed but not yet added to their account's row (PostgreSQL
-- defers credits there so that writers of one account do not wait on each
-- other; see migrations/postgres/0015_pending_credits.sql). SQLite has one
-- writer and adds every credit to its row at once: this table stays empty,
-- and is here so that both databases have the same tables and the same
-- balance reads.
CREATE TABLE ledger_pending_credits (
    seq INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    owner TEXT,
    asset TEXT NOT NULL,
    amount TEXT NOT NULL CHECK (amount GLOB '[1-9]*')
);
CREATE INDEX ledger_pending_credits_key ON ledger_pending_credits (key);
