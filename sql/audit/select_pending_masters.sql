-- Every master with a version from a run not in $audited, and how many versions it has in {history}.
SELECT master_id, count(*) AS versions
FROM {history}
WHERE master_id IN (SELECT master_id FROM {history} WHERE NOT list_contains($audited, run_id))
GROUP BY master_id
