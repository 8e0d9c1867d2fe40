-- One run's changes since the previous run, as the quality_trend view computes them.
SELECT stage, source_system, attribute, metric, rule, previous_value, delta
FROM quality_trend
WHERE run_id = $run_id
