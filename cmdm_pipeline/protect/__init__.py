"""Protection, one sub-package per concern: ``keys`` (key-encryption keys, the key store, encryption at rest,
blind indexes, rotation), ``consent``, ``erasure``, ``lenses`` (the published views), ``audit`` (the audit log)
and ``lookup`` (finding a customer by blind index)."""
