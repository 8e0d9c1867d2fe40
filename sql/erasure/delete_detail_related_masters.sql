-- Audit rows whose detail names one of the subject's master ids as the other side (a decision, merge or split).
DELETE FROM {table}
WHERE CASE WHEN json_valid(detail) THEN json_extract_string(detail, '$.related_master_id') END
      IN (SELECT master_id FROM {masters})
