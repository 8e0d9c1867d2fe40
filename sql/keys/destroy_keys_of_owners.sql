-- Crypto-shredding: forget the wrapped keys of the owners in {owners}; the row stays as proof.
UPDATE data_keys SET kek_id = NULL, nonce = NULL, wrapped_key = NULL, destroyed_at = $now
FROM {owners} AS o
WHERE data_keys.owner = o.owner AND data_keys.destroyed_at IS NULL
