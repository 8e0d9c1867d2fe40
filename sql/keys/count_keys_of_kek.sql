SELECT count(*) FROM data_keys WHERE destroyed_at IS NULL AND kek_id = $kek_id
