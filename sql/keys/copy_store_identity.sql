INSERT INTO store_identity SELECT * FROM old.store_identity
