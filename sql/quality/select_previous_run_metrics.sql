-- The latest quality run other than $run_id: its all-sources rows of the $metrics asked for.
WITH previous AS (
    SELECT run_id FROM quality_report WHERE run_id <> $run_id
    GROUP BY run_id ORDER BY max(run_at) DESC, run_id DESC LIMIT 1
)
SELECT q.run_id, q.metric, q.value
FROM quality_report AS q
JOIN previous AS p ON p.run_id = q.run_id
WHERE q.source_system IS NULL AND list_contains($metrics, q.metric)
ORDER BY q.metric
