-- One live data key per key-encryption key, and how many each wraps: enough to tell a wrong key early.
SELECT DISTINCT ON (kek_id) kek_id, count(*) OVER (PARTITION BY kek_id) AS data_keys,
       data_key_id, owner, nonce, wrapped_key
FROM data_keys WHERE destroyed_at IS NULL
ORDER BY kek_id
