-- Owners whose data key was destroyed (crypto-shredded): erased subjects' masters, records and events.
SELECT DISTINCT owner FROM data_keys WHERE destroyed_at IS NOT NULL ORDER BY owner
