-- Audit rows derived from the subject's records, such as their steward decisions (ids: audit_id).
DELETE FROM {table} WHERE audit_id IN (SELECT audit_id FROM {ids})
