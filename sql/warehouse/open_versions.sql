-- Rows of {current} that begin a version {history} does not hold yet; they share its ciphertext.
INSERT INTO {history} BY NAME
SELECT c.*, CAST(NULL AS TIMESTAMPTZ) AS valid_to, $run_id AS run_id FROM {current} AS c
WHERE NOT EXISTS (SELECT 1 FROM {history} AS h WHERE h.master_id = c.master_id AND h.valid_from = c.valid_from)
