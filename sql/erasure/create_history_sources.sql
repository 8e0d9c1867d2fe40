-- One row per history version x source record it drew on (ids only): how erasure finds a subject's values
-- copied into other masters' versions.
CREATE TABLE IF NOT EXISTS {table} (
    master_id VARCHAR NOT NULL,
    valid_from TIMESTAMP WITH TIME ZONE NOT NULL,
    source_system VARCHAR NOT NULL,
    source_record_id VARCHAR NOT NULL
)
