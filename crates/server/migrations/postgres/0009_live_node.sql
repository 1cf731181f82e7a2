-- The node ingesting a live stream: a node that restarts ends only its own
-- interrupted streams, never those other nodes of a cluster are ingesting.
ALTER TABLE streams ADD COLUMN live_node TEXT;
