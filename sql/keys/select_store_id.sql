SELECT store_id FROM store_identity
