INSERT INTO keks (kek_id, registered_at) VALUES ($kek_id, $now) ON CONFLICT DO NOTHING
