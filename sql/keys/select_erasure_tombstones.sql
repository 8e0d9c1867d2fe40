SELECT tombstone, kind, request_id, created_at, run_id FROM erasure_tombstones ORDER BY created_at, request_id, tombstone
