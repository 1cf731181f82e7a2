-- A paid stream's creator may make its archive public (free streams'
-- archives always are); its live and session playback stay paid.
ALTER TABLE streams ADD COLUMN archive_public INTEGER NOT NULL DEFAULT 0 CHECK (archive_public IN (0, 1));
