-- Every live data key not yet wrapped by the active key-encryption key.
SELECT data_key_id, owner, kek_id, nonce, wrapped_key
FROM data_keys WHERE destroyed_at IS NULL AND kek_id <> $active
