-- The quality run to report: the one asked for ($run_id), else the latest.
SELECT run_id, max(run_at) AS run_at
FROM quality_report
WHERE $run_id IS NULL OR run_id = $run_id
GROUP BY run_id
ORDER BY run_at DESC, run_id DESC
LIMIT 1
