-- Forget a table's ciphertext columns; its new version records its own.
DELETE FROM {table} WHERE table_name = $table_name
