-- How a stream is paid for: free, or per second at `price_amount` base
-- units per `price_period_seconds`, with an optional free preview.
ALTER TABLE streams ADD COLUMN access TEXT NOT NULL DEFAULT 'free' CHECK (access IN ('free', 'per_second'));
ALTER TABLE streams ADD COLUMN price_amount TEXT;
ALTER TABLE streams ADD COLUMN price_period_seconds INTEGER;
ALTER TABLE streams ADD COLUMN preview_seconds INTEGER NOT NULL DEFAULT 0 CHECK (preview_seconds >= 0);
