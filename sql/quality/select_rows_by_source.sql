-- Validated and quarantined rows per source, as the validation step left them.
WITH validated AS (
    SELECT source_system, count(*) AS n FROM validated_customers GROUP BY source_system
), quarantined AS (
    SELECT source_system, count(*) AS n FROM quarantined_records GROUP BY source_system
)
SELECT coalesce(v.source_system, q.source_system) AS source_system,
       coalesce(v.n, 0) AS validated, coalesce(q.n, 0) AS quarantined
FROM validated AS v FULL JOIN quarantined AS q ON q.source_system = v.source_system
ORDER BY 1
