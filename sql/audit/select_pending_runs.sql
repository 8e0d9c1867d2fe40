-- The runs with a version in {history} that are not in $audited.
SELECT DISTINCT run_id FROM {history} WHERE NOT list_contains($audited, run_id)
