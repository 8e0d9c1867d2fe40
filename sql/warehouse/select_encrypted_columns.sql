-- The ciphertext columns of one table and their plaintext types.
SELECT column_name, plaintext_type FROM {table} WHERE table_name = $table_name ORDER BY column_name
