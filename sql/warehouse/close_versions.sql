-- Current versions that {current} no longer holds (the values changed, the master merged or was erased) end $at.
UPDATE {history} AS h SET valid_to = $at
WHERE h.valid_to IS NULL
  AND NOT EXISTS (SELECT 1 FROM {current} AS c WHERE c.master_id = h.master_id AND c.valid_from = h.valid_from)
