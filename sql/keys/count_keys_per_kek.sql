-- Live data keys per key-encryption key; destroyed keys (kek_id null) counted apart.
SELECT kek_id, count(*) FILTER (WHERE destroyed_at IS NULL) AS live,
       count(*) FILTER (WHERE destroyed_at IS NOT NULL) AS destroyed
FROM data_keys GROUP BY kek_id ORDER BY kek_id NULLS LAST
