-- Base tables of the warehouse and their columns: erasure decides from the columns which rows are a subject's.
SELECT t.table_name, list(c.column_name ORDER BY c.ordinal_position) AS columns
FROM information_schema.tables AS t
JOIN information_schema.columns AS c ON c.table_name = t.table_name AND c.table_schema = t.table_schema
WHERE t.table_type = 'BASE TABLE' AND t.table_schema = 'main'
GROUP BY t.table_name
ORDER BY t.table_name
