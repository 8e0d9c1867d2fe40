-- The quality run before the one reported, for the changes since then.
SELECT run_id, max(run_at) AS run_at
FROM quality_report
GROUP BY run_id
HAVING max(run_at) < $run_at
ORDER BY run_at DESC, run_id DESC
LIMIT 1
