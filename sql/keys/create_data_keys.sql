-- One row per data key. Ids are 16 random bytes (no index: an ART index on BLOBs costs a third of the
-- file and the writes); a destroyed key keeps its row as proof, with every key column null.
CREATE TABLE IF NOT EXISTS data_keys (
    data_key_id BLOB NOT NULL,
    owner VARCHAR NOT NULL,
    kek_id VARCHAR,
    nonce BLOB,
    wrapped_key BLOB,
    created_at TIMESTAMP NOT NULL,
    destroyed_at TIMESTAMP
)
