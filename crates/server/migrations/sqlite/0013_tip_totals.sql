-- Tips per stream, kept as running totals (base units as decimal text, like
-- every amount here), updated in the transaction that records each tip once.
CREATE TABLE stream_tips (
    tip_id TEXT PRIMARY KEY NOT NULL,
    stream_id TEXT NOT NULL REFERENCES streams (id),
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE stream_tip_totals (
    stream_id TEXT PRIMARY KEY NOT NULL REFERENCES streams (id),
    tips INTEGER NOT NULL,
    gross TEXT NOT NULL,
    creator TEXT NOT NULL,
    fee TEXT NOT NULL
);
