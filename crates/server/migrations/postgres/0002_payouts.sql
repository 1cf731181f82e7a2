-- Automatic payouts: when an account's earned balance reaches its threshold,
-- the whole earned balance is withdrawn (a pending payout record).
CREATE TABLE payout_thresholds (
    owner TEXT PRIMARY KEY,
    threshold NUMERIC(40, 0) NOT NULL CHECK (threshold > 0),
    updated_at_ms BIGINT NOT NULL
);
