-- Watch statistics are added to their rows by the statement that writes
-- them (store::stats): the amounts' range is checked here, as the code
-- checked it when it read the rows first.
ALTER TABLE stream_viewers ADD CONSTRAINT stream_viewers_amounts_in_range CHECK (
    CAST(gross AS NUMERIC) BETWEEN 0 AND 340282366920938463463374607431768211455
    AND CAST(net AS NUMERIC) BETWEEN 0 AND 340282366920938463463374607431768211455
    AND CAST(fee AS NUMERIC) BETWEEN 0 AND 340282366920938463463374607431768211455
);
