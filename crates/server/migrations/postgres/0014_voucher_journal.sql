-- Vouchers accepted and durable whose ledger step is not yet folded into
-- their channel's row, balances and transfers (docs/ARCHITECTURE.md,
-- "The voucher journal"). Appended by each commit of vouchers, emptied by
-- each fold; on start a node folds what is left.
CREATE TABLE voucher_journal (
    seq BIGSERIAL PRIMARY KEY,
    channel TEXT NOT NULL,
    amount TEXT NOT NULL,
    signature BYTEA NOT NULL,
    accepted_at_ms BIGINT NOT NULL
);
