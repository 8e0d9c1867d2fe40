-- A copy of every erasure tombstone (keyed digests and blind indexes: never values), written before the erased
-- subject's keys are destroyed: a warehouse restored from a backup older than the erasure gets them back.
CREATE TABLE IF NOT EXISTS erasure_tombstones (
    tombstone BLOB NOT NULL USING COMPRESSION uncompressed,
    kind VARCHAR NOT NULL,
    request_id VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    run_id VARCHAR
)
