-- Lineage rows that name one of the subject's master ids as the other side of a merge or split.
DELETE FROM {table} WHERE related_master_id IN (SELECT master_id FROM {masters})
