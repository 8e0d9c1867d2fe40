-- A table's columns and their DuckDB types, in order.
SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $table_name ORDER BY ordinal_position
