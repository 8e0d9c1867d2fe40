-- Rows read per source by the last run that assigned master ids (the run {sequence} names).
SELECT r.source_system, r.rows_read
FROM {reconciliation} AS r
JOIN {sequence} AS s ON r.run_id = s.run_id
WHERE r.run_id <> $run_id
