-- One run's quality rows.
SELECT stage, source_system, attribute, metric, rule, rows_evaluated, rows_failed, pass_rate, value
FROM quality_report
WHERE run_id = $run_id
