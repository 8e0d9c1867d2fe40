INSERT INTO keks SELECT * FROM old.keks
