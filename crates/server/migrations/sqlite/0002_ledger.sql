-- The ledger: accounts with cached balances (re-derivable from transfers by
-- the audit), immutable transfers, channels, revenue policies, sign-in.
-- Amounts are decimal strings of base units (u128 does not fit an INTEGER).

CREATE TABLE ledger_accounts (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    owner TEXT,
    asset TEXT NOT NULL,
    balance TEXT NOT NULL CHECK (balance GLOB '[0-9]*' OR balance GLOB '-[1-9]*'),
    -- Only the outside world may be owed money.
    CHECK (kind = 'world' OR balance NOT GLOB '-*')
);

CREATE TABLE ledger_transfers (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    debit TEXT NOT NULL,
    credit TEXT NOT NULL,
    body TEXT NOT NULL,
    asset TEXT NOT NULL,
    amount TEXT NOT NULL CHECK (amount GLOB '[1-9]*' AND amount NOT GLOB '*[^0-9]*'),
    kind TEXT NOT NULL,
    channel TEXT,
    created_at_ms INTEGER NOT NULL,
    CHECK (debit != credit)
);
CREATE INDEX ledger_transfers_debit ON ledger_transfers (debit, seq);
CREATE INDEX ledger_transfers_credit ON ledger_transfers (credit, seq);
CREATE TRIGGER ledger_transfers_no_update BEFORE UPDATE ON ledger_transfers
BEGIN SELECT RAISE(ABORT, 'transfers are immutable'); END;
CREATE TRIGGER ledger_transfers_no_delete BEFORE DELETE ON ledger_transfers
BEGIN SELECT RAISE(ABORT, 'transfers are immutable'); END;

CREATE TABLE channels (
    id TEXT PRIMARY KEY,
    payer TEXT NOT NULL,
    payee TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'closing', 'closed')),
    body TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX channels_payer ON channels (payer);
CREATE INDEX channels_payee ON channels (payee);

CREATE TABLE revenue_policies (
    owner TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

CREATE TABLE auth_challenges (
    nonce TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    message TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
);

CREATE TABLE auth_tokens (
    token_hash TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE withdrawals (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    asset TEXT NOT NULL,
    amount TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'paid')),
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX withdrawals_address ON withdrawals (address, created_at_ms);
