-- Which columns of which table hold ciphertext, and the type their plaintext is read back as.
CREATE TABLE IF NOT EXISTS {table} (table_name VARCHAR, column_name VARCHAR, plaintext_type VARCHAR)
