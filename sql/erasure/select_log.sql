-- erasure_log for `cmdm erase --log`: newest first; rows removed summed over tables.
SELECT request_id, status, processed_at, masters_erased, records_erased, keys_destroyed,
       coalesce((SELECT sum(CAST(value AS BIGINT)) FROM json_each(rows_removed)), 0) AS rows
FROM {table}
ORDER BY processed_at DESC, request_id
