-- The key store's id: one random row, written when the store is created. The warehouse records the same id
-- (table cmdm_key_store), so a lost, swapped or recreated store is told apart from the one it was paired with.
CREATE TABLE IF NOT EXISTS store_identity (
    store_id VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL
)
