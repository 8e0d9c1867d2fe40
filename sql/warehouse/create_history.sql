-- An empty history of {current}: its columns, plus when each version ended and the run that began it.
CREATE TABLE IF NOT EXISTS {history} AS
SELECT *, CAST(NULL AS TIMESTAMPTZ) AS valid_to, CAST(NULL AS VARCHAR) AS run_id FROM {current} LIMIT 0
