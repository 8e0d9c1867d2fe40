INSERT INTO erasure_tombstones SELECT * FROM old.erasure_tombstones
