-- Each committed channel state's revision: a writer updates a channel only
-- from the revision it read, so nodes sharing one database never build on
-- a state another node has replaced.
ALTER TABLE channels ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
