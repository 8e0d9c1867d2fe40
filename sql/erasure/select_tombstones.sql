-- Every tombstone (digests and blind indexes, never values).
SELECT tombstone, kind FROM {table}
