-- Masters holding a value, by its blind index (kind: email, phone or national_id).
SELECT DISTINCT master_id FROM {table} WHERE kind = $kind AND blind_index = $blind_index ORDER BY master_id
