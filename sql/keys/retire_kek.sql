UPDATE keks SET retired_at = $now WHERE kek_id = $kek_id AND retired_at IS NULL
