-- The key store this warehouse is paired with (one row): its id, and a copy of the blind-index root key as
-- the store wraps it (under a key-encryption key: useless without it). Erasure tombstones and blind indexes
-- are keyed by that root key, so a store started anew after a loss (`cmdm keys new-store`) keeps them.
CREATE OR REPLACE TABLE {table} (
    store_id VARCHAR NOT NULL,
    index_key_id BLOB,
    kek_id VARCHAR,
    nonce BLOB,
    wrapped_key BLOB,
    recorded_at TIMESTAMP NOT NULL
)
