-- The blind-index root key as stored (still wrapped): the warehouse keeps a copy of this row.
SELECT data_key_id, kek_id, nonce, wrapped_key
FROM data_keys WHERE owner = $owner AND destroyed_at IS NULL
