-- One row per key-encryption key that ever wrapped a data key here (ids only, never key material).
CREATE TABLE IF NOT EXISTS keks (
    kek_id VARCHAR PRIMARY KEY,
    registered_at TIMESTAMP NOT NULL,
    retired_at TIMESTAMP
)
