-- Review questions listing the subject's record among their records ('system:id').
DELETE FROM {table}
WHERE list_has_any(records, (SELECT list(source_system || ':' || source_record_id) FROM {records}))
