-- Rows of the subject's source records (records: source_system, source_record_id).
DELETE FROM {table} AS t
USING {records} AS r
WHERE t.source_system = r.source_system AND t.source_record_id = r.source_record_id
