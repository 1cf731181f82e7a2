-- /ipfs/{cid} looks files up by CID to apply their stream's access rules.
CREATE INDEX segments_cid ON segments (cid);
CREATE INDEX renditions_init_cid ON renditions (init_cid);
