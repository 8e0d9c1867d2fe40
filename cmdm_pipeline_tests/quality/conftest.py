"""A schema with every rule type, rows that break each, and standardised-shaped frames of them."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from cmdm_pipeline.schema import CustomerSchema
from cmdm_pipeline.stages.standardise import standardised_columns

TODAY = dt.date(2026, 6, 30)

#: Every rule type, on text, date and number attributes, reject and warn, cross-field too.
SCHEMA = CustomerSchema.model_validate({
    "attributes": {
        "first_name": {"kind": "person_name", "pii": True, "rules": [{"required": True, "severity": "warn"}]},
        "last_name": {"kind": "person_name", "pii": True, "rules": [{"length": {"min": 2, "max": 12}}]},
        "email": {"kind": "email", "pii": True, "rules": [{"pattern": "[^@]+@example\\.org"}]},
        "gender": {"kind": "category", "pii": True, "rules": [{"allowed": ["female", "male", "other"], "severity": "warn"}]},
        "country": {"kind": "country", "rules": [{"pattern": "[A-Z]{2}"}]},
        "date_of_birth": {"kind": "date", "pii": True, "rules": [{"range": {"min": "1900-01-01", "max": "today"}}]},
        # A text rule on a number: both read the value as text, a whole number without ".0" ("7", "10.5").
        "nps_score": {"kind": "number", "rules": [{"range": {"min": 0, "max": 10}},
                                                  {"pattern": "10|[0-9]", "name": "nps_score.whole"}]},
    },
    "rules": [
        {"name": "has_a_name", "expression": "first_name IS NOT NULL OR last_name IS NOT NULL"},
        {"name": "reachable", "expression": "email IS NOT NULL OR country = 'GB'", "severity": "warn"},
    ],
})

ROWS = {
    "source_system": ["crm"] * 8,
    "first_name": ["Ada", None, "Grace", None, "Linus", "Zed", "Q", None],
    "last_name": ["Lovelace", "Turing", "X", None, "Averylongfamilyname", "Ok", "Hopper", None],
    # A trailing newline: Python's $ would accept it, the gate's regex does not.
    "email": ["ada@example.org", "alan@example.com", None, "g@example.org\n", None, "z@example.org", None, None],
    "gender": ["female", "f", None, "male", "divers", None, "other", None],
    "country": ["GB", "DEU", "gb", None, "FR", "GB", "US", None],
    "date_of_birth": [dt.date(1985, 12, 10), dt.date(2999, 1, 1), dt.date(1, 1, 1), None, dt.date(1900, 1, 1),
                      TODAY, dt.date(1899, 12, 31), None],
    "nps_score": [7.0, 10.0, 10.5, -1.0, None, 0.0, 11.0, 3.0],
}


def standardised_frame(schema: CustomerSchema, rows: dict[str, list[Any]]) -> pl.DataFrame:
    """A frame with every standardised column: the given ones filled, the others null."""
    height = len(next(iter(rows.values())))
    columns = standardised_columns(schema)
    return pl.DataFrame(
        {name: rows.get(name, [None] * height) for name in columns}, schema=columns
    )
