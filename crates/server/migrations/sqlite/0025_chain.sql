-- The escrow on chain. `chain_cursors`: the next block whose logs are read
-- once final, and the hash of the last final block read (a reorg deeper than
-- the confirmations shows as a different hash). `chain_txs`: transactions
-- signed by the settler, stored before they are sent, so a restart sends
-- the same bytes again instead of a second transaction.
CREATE TABLE chain_cursors (
    chain_id BIGINT NOT NULL,
    escrow TEXT NOT NULL,
    next_block BIGINT NOT NULL,
    last_hash TEXT,
    PRIMARY KEY (chain_id, escrow)
);
CREATE TABLE chain_txs (
    hash TEXT PRIMARY KEY,
    chain_id BIGINT NOT NULL,
    escrow TEXT NOT NULL,
    sender TEXT NOT NULL,
    nonce BIGINT NOT NULL,
    raw TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('settle', 'finalize')),
    body TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('sent', 'mined', 'failed', 'dropped')),
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX chain_txs_state ON chain_txs (state, created_at_ms);
