"""Errors raised on more than one floor: by the warehouse (storage) and by protection above it."""


class ProtectionError(Exception):
    """A key or encryption problem; the message names keys, tables and records, never values or key material."""
