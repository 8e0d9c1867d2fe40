"""Lenses, the published views of the golden records: building them (``build``), their tokenisation keys (``keys``), publishing them as files (``publication``) and to PostgreSQL (``postgres``)."""
