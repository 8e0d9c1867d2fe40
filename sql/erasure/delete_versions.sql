-- Versions of other masters that drew on the subject's records (versions: master_id, valid_from).
DELETE FROM {table} AS t
USING {versions} AS v
WHERE t.master_id = v.master_id AND t.valid_from = v.valid_from
