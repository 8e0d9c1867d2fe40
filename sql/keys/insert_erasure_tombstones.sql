-- The tombstones of {staged} not held yet: copying the same ones again adds nothing.
INSERT INTO erasure_tombstones (tombstone, kind, request_id, created_at, run_id)
SELECT DISTINCT ON (s.tombstone) s.tombstone, s.kind, s.request_id, s.created_at, s.run_id
FROM {staged} AS s
WHERE NOT EXISTS (SELECT 1 FROM erasure_tombstones AS t WHERE t.tombstone = s.tombstone)
