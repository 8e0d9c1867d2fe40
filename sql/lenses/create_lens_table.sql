CREATE TABLE {table} AS SELECT * FROM {staged}
