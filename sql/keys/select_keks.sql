SELECT kek_id, registered_at, retired_at FROM keks ORDER BY registered_at, kek_id
