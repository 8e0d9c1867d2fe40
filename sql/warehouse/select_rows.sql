-- The rows of {table} whose key columns hold a row of {rows}.
SELECT t.* FROM {table} AS t SEMI JOIN {rows} USING ({keys})
