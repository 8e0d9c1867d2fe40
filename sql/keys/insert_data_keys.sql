INSERT INTO data_keys (data_key_id, owner, kek_id, nonce, wrapped_key, created_at)
SELECT data_key_id, owner, kek_id, nonce, wrapped_key, created_at FROM {staged}
