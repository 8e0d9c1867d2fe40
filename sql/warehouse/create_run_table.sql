-- An empty per-run table shaped like the staged frame, if it does not exist yet.
CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM {staged} LIMIT 0
