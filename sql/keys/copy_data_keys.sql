-- Copy every data key from the attached old store, with the new wrapping where {rewrapped} has one.
INSERT INTO data_keys
SELECT d.data_key_id, d.owner,
       coalesce(r.kek_id, d.kek_id), coalesce(r.nonce, d.nonce), coalesce(r.wrapped_key, d.wrapped_key),
       d.created_at, d.destroyed_at
FROM old.data_keys AS d LEFT JOIN {rewrapped} AS r ON d.data_key_id = r.data_key_id
