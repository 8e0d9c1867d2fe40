-- Golden records, distinct master ids among them, and records without one.
SELECT count(*) AS rows, count(DISTINCT master_id) AS distinct_ids, count(*) - count(master_id) AS missing
FROM golden_customers
