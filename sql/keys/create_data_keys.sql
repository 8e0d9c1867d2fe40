-- One row per data key. Ids are 16 random bytes (no index: an ART index on BLOBs costs a third of the
-- file and the writes); a destroyed key keeps its row as proof, with every key column null. The random
-- BLOBs are stored uncompressed: no method compresses them, and trying DICT_FSST slowed the writes.
CREATE TABLE IF NOT EXISTS data_keys (
    data_key_id BLOB NOT NULL USING COMPRESSION uncompressed,
    owner VARCHAR NOT NULL,
    kek_id VARCHAR,
    nonce BLOB USING COMPRESSION uncompressed,
    wrapped_key BLOB USING COMPRESSION uncompressed,
    created_at TIMESTAMP NOT NULL,
    destroyed_at TIMESTAMP
)
