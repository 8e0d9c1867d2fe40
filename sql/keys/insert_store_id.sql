INSERT INTO store_identity (store_id, created_at) VALUES ($store_id, $now)
