-- Rows whose key {table} does not hold yet: appending the same rows again adds nothing.
INSERT INTO {table} BY NAME
SELECT * FROM {staged} AS s
WHERE NOT EXISTS (SELECT 1 FROM {table} AS t WHERE t.{key} = s.{key})
