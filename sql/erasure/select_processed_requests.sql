-- Request ids already processed: each request is processed once.
SELECT DISTINCT request_id FROM {table}
