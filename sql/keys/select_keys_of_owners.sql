-- The live data key of each owner in {owners} (owner, pos), in the order of pos.
SELECT o.pos, k.owner, k.data_key_id, k.kek_id, k.nonce, k.wrapped_key
FROM data_keys AS k JOIN {owners} AS o ON k.owner = o.owner
WHERE k.destroyed_at IS NULL
ORDER BY o.pos
