-- Retention: an ended stream's recording is kept `retention_days` after it
-- ended (NULL: forever); `expired_at_ms` marks when it was removed.
ALTER TABLE streams ADD COLUMN retention_days INTEGER CHECK (retention_days IS NULL OR retention_days > 0);
ALTER TABLE streams ADD COLUMN expired_at_ms INTEGER;
