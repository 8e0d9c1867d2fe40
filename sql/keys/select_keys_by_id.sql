-- The data keys whose ids are in {ids} (data_key_id, pos), destroyed ones included (key columns null).
SELECT i.pos, k.data_key_id, k.owner, k.kek_id, k.nonce, k.wrapped_key, k.destroyed_at
FROM data_keys AS k JOIN {ids} AS i ON k.data_key_id = i.data_key_id
ORDER BY i.pos
