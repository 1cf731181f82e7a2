-- Automatic payouts: when an account's earned balance reaches its threshold,
-- the whole earned balance is withdrawn (a pending payout record).
CREATE TABLE payout_thresholds (
    owner TEXT PRIMARY KEY,
    threshold TEXT NOT NULL CHECK (threshold GLOB '[1-9]*' AND threshold NOT GLOB '*[^0-9]*'),
    updated_at_ms INTEGER NOT NULL
);
