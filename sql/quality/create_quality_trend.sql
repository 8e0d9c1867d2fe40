-- Each run's quality metrics beside the previous run's (the run before it by run_at), same
-- stage, source, attribute, metric and rule: previous_value is null for a metric that run lacked.
CREATE OR REPLACE VIEW quality_trend AS
WITH runs AS (
    SELECT run_id, max(run_at) AS run_at FROM quality_report GROUP BY run_id
), ordered AS (
    SELECT run_id, lag(run_id) OVER (ORDER BY run_at, run_id) AS previous_run_id FROM runs
)
SELECT q.run_id, q.run_at, o.previous_run_id, q.stage, q.source_system, q.attribute, q.metric, q.rule,
       q.value, p.value AS previous_value, q.value - p.value AS delta
FROM quality_report AS q
JOIN ordered AS o ON o.run_id = q.run_id
LEFT JOIN quality_report AS p
    ON p.run_id = o.previous_run_id
    AND p.stage = q.stage
    AND p.metric = q.metric
    AND p.source_system IS NOT DISTINCT FROM q.source_system
    AND p.attribute IS NOT DISTINCT FROM q.attribute
    AND p.rule IS NOT DISTINCT FROM q.rule
