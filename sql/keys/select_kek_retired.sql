SELECT retired_at FROM keks WHERE kek_id = $kek_id AND retired_at IS NOT NULL
