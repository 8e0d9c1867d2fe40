-- Rows of a run's quarantine that mention the subject (rows: run_id, source_row_number).
DELETE FROM {table} AS t
USING {rows} AS r
WHERE t.run_id = r.run_id AND t.source_row_number = r.source_row_number
