INSERT INTO {table} VALUES ($store_id, $index_key_id, $kek_id, $nonce, $wrapped_key, $now)
