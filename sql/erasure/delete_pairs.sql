-- Pairs with the subject's record on either side.
DELETE FROM {table} AS t
USING {records} AS r
WHERE (t.source_system_l = r.source_system AND t.source_record_id_l = r.source_record_id)
   OR (t.source_system_r = r.source_system AND t.source_record_id_r = r.source_record_id)
