-- The blind-index root key copied as it was wrapped (cmdm keys new-store): tombstones and indexes keep matching.
INSERT INTO data_keys (data_key_id, owner, kek_id, nonce, wrapped_key, created_at)
VALUES ($data_key_id, $owner, $kek_id, $nonce, $wrapped_key, $now)
