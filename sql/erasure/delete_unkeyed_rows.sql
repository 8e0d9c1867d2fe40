-- Rows without a record id that are the subject's (rows: source_system, source_row_number of the last run).
DELETE FROM {table} AS t
USING {rows} AS r
WHERE t.source_record_id IS NULL AND t.source_system = r.source_system AND t.source_row_number = r.source_row_number
