-- Source rows a run dropped because a tombstone matched them, per source.
SELECT source_system, rows_erased FROM {table} WHERE run_id = $run_id
