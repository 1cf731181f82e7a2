-- The rows rewritten most often under load keep room on their page for
-- their next version: a channel's row (each voucher group writes its body
-- and revision) and a viewer's watch statistics (added to every second).
-- An update that changes no indexed column and finds room on the row's page
-- stays on that page (a heap-only tuple): it writes no index entry, and the
-- old version is pruned by the next access to the page rather than left
-- for vacuum. Applies to pages written from now on.
ALTER TABLE channels SET (fillfactor = 50);
ALTER TABLE stream_viewers SET (fillfactor = 70);
