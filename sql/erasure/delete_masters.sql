-- Rows of the subject's master ids (masters: master_id).
DELETE FROM {table} WHERE master_id IN (SELECT master_id FROM {masters})
