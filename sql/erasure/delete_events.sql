-- Consent rows of the subject's events (events: event_id).
DELETE FROM {table} WHERE event_id IN (SELECT event_id FROM {events})
