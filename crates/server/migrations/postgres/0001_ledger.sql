-- The ledger on PostgreSQL: the same model as the SQLite schema, with exact
-- NUMERIC amounts so the database itself enforces non-negative balances.

CREATE TABLE ledger_accounts (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    owner TEXT,
    asset TEXT NOT NULL,
    balance NUMERIC(40, 0) NOT NULL,
    CHECK (kind = 'world' OR balance >= 0)
);
CREATE INDEX ledger_accounts_owner ON ledger_accounts (owner);

CREATE TABLE ledger_transfers (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    debit TEXT NOT NULL,
    credit TEXT NOT NULL,
    body TEXT NOT NULL,
    asset TEXT NOT NULL,
    amount NUMERIC(40, 0) NOT NULL CHECK (amount > 0 AND amount < 340282366920938463463374607431768211456),
    kind TEXT NOT NULL,
    channel TEXT,
    created_at_ms BIGINT NOT NULL,
    CHECK (debit <> credit)
);
CREATE INDEX ledger_transfers_debit ON ledger_transfers (debit, seq);
CREATE INDEX ledger_transfers_credit ON ledger_transfers (credit, seq);
CREATE FUNCTION ledger_transfers_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'transfers are immutable'; END $$;
CREATE TRIGGER ledger_transfers_no_change BEFORE UPDATE OR DELETE ON ledger_transfers
FOR EACH ROW EXECUTE FUNCTION ledger_transfers_immutable();

CREATE TABLE channels (
    id TEXT PRIMARY KEY,
    payer TEXT NOT NULL,
    payee TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'closing', 'closed')),
    body TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX channels_payer ON channels (payer);
CREATE INDEX channels_payee ON channels (payee);

CREATE TABLE revenue_policies (
    owner TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE auth_challenges (
    nonce TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    message TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);

CREATE TABLE auth_tokens (
    token_hash TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    revoked BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE withdrawals (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    asset TEXT NOT NULL,
    amount NUMERIC(40, 0) NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'paid')),
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX withdrawals_address ON withdrawals (address, created_at_ms);
