"""Protection: consent per purpose and channel, the audit log (and, from others, encryption and keys)."""
