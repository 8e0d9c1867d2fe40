-- Record a table's ciphertext columns (staged: column_name, plaintext_type).
INSERT INTO {table} SELECT $table_name, column_name, plaintext_type FROM {staged}
