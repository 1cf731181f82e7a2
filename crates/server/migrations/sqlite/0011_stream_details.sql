-- What discovery shows and searches: a description, a category and tags
-- (stored as ",tag,tag," so one tag matches with instr()).
ALTER TABLE streams ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE streams ADD COLUMN category TEXT;
ALTER TABLE streams ADD COLUMN tags TEXT NOT NULL DEFAULT '';
CREATE INDEX streams_category ON streams (category);
