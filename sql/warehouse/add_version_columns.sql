-- A new history, shaped like its current table so far: plus when each version ended and the run that began it.
ALTER TABLE {history} ADD COLUMN valid_to TIMESTAMPTZ;
ALTER TABLE {history} ADD COLUMN run_id VARCHAR
