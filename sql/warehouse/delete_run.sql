-- Rows of one run, removed before that run's rows are written again (reruns stay idempotent).
DELETE FROM {table} WHERE run_id = $run_id
