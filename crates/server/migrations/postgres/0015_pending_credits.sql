-- Credits committed but not yet added to their account's row: a commit
-- appends what it credits here instead of updating the row, which every
-- writer of the same account (the platform's, a creator's) would otherwise
-- lock until its commit is durable, one node after another. An account's
-- balance is its row plus its pending credits; a debit, and the periodic
-- fold, move them into the row under the row's lock (docs/ARCHITECTURE.md,
-- "Pending credits").
CREATE TABLE ledger_pending_credits (
    seq BIGSERIAL PRIMARY KEY,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    owner TEXT,
    asset TEXT NOT NULL,
    amount NUMERIC(40, 0) NOT NULL CHECK (amount > 0 AND amount < 340282366920938463463374607431768211456)
);
CREATE INDEX ledger_pending_credits_key ON ledger_pending_credits (key);
