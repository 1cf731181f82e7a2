-- Voucher steps whose transfers wait in their channel's row (several nodes
-- on one database; docs/ARCHITECTURE.md, "Deferred voucher steps"): the
-- redeemed amount the channel's transfers reach, and when its first and
-- latest waiting steps were accepted. All three are NULL when nothing
-- waits. A fold writes the waiting steps' transfers as one step and clears
-- them, under the row's lock.
ALTER TABLE channels ADD COLUMN folded_redeemed NUMERIC(40, 0)
    CHECK (folded_redeemed >= 0 AND folded_redeemed < 340282366920938463463374607431768211456);
ALTER TABLE channels ADD COLUMN unfolded_first_ms BIGINT;
ALTER TABLE channels ADD COLUMN unfolded_last_ms BIGINT;
CREATE INDEX channels_unfolded ON channels (unfolded_first_ms)
    WHERE folded_redeemed IS NOT NULL;
