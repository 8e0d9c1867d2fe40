-- Replace {table} with the staged frame; runs inside the caller's transaction.
CREATE OR REPLACE TABLE {table} AS SELECT * FROM {staged}
