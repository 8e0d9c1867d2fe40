-- The current versions of {history} with the records {sources} gives their masters (members or winners),
-- those {table} does not list yet.
INSERT INTO {table}
SELECT DISTINCT h.master_id, h.valid_from, s.source_system, s.source_record_id
FROM {history} AS h
JOIN {sources} AS s ON s.master_id = h.master_id
WHERE h.valid_to IS NULL AND s.source_system IS NOT NULL AND s.source_record_id IS NOT NULL
  AND NOT EXISTS (
      SELECT 1 FROM {table} AS t
      WHERE t.master_id = h.master_id AND t.valid_from = h.valid_from
        AND t.source_system = s.source_system AND t.source_record_id = s.source_record_id
  )
