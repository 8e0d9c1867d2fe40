"""One customer record as the pipeline would read it: checked, standardised, judged by the schema's rules.

The record is a mapping of the customer schema's attribute names to values, as a caller sends them (JSON
text, numbers, booleans). It goes through the pipeline's own standardisation (:func:`stages.standardise.
standardise`, as a one-row source whose columns are the attribute names) and the schema's rules (the
rules the validation gate compiles, :func:`stages.validate.compile_rules`, evaluated on the one row:
the same tests the Pandera gate runs, without its per-call set-up of ~20 ms).

What a value may be (decided here, the same for every attribute of a kind):

- ``None`` or a missing key: no value.
- Text: any attribute. Dates are ISO 8601 text (``1980-02-03``) or ``datetime.date`` values.
- A number (int or float, not bool): any attribute but a date, read as the text a source file would hold
  (``12345``, ``7.5``): a postcode, phone or id is often sent as a number, and a name that is a number is
  left to the schema's rules to judge, as it is in a source file.
- ``True``/``False``: boolean attributes only.
- Anything else (a list, an object): a wrong type, refused.

``party_type`` (``person`` or ``organisation``, default ``person``) and ``record_type`` (``lead``, ``contact``
or ``customer``, default ``customer``) may be given beside the attributes: records of different party types
are never compared, as in the batch; the record type is only carried into the standardised record.

Refusals raise :class:`ResolveInputError` naming the field; messages never hold a value.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from cmdm_pipeline.config import PartyType, ProjectConfig, RecordType, Source
from cmdm_pipeline.schema import CustomerSchema, Kind
from cmdm_pipeline.stages.standardise import standardise
from cmdm_pipeline.stages.validate import CompiledRule, compile_rules

PARTY_TYPE, RECORD_TYPE = "party_type", "record_type"
SOURCE_NAME = "resolve"
#: How a date is sent: ISO 8601.
DATE_FORMAT = "%Y-%m-%d"
#: A field name shown in a message must look like one (an unknown key could be anything, a value even).
_SHOWABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$")


class ResolveInputError(ValueError):
    """A record resolve cannot read: ``field`` names the attribute (or None for the record as a whole);
    the message says what is wrong, never with the value."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ReadRecord:
    frame: pl.DataFrame  # one row: party_type, record_type and every schema attribute, standardised
    standardised: dict[str, Any]  # the same as JSON values: party_type, record_type and every attribute
    issues: list[dict[str, str]]  # rule, attribute, severity, reason


def _text(name: str, kind: Kind, value: Any) -> str:
    """The value as the text a source would hold, or :class:`ResolveInputError`."""
    if isinstance(value, bool):
        if kind is Kind.boolean:
            return "true" if value else "false"
        raise ResolveInputError(name, f"{name}: true/false is only a value of a boolean attribute")
    if kind is Kind.date:
        if isinstance(value, dt.datetime):
            raise ResolveInputError(name, f"{name}: a date is sent as YYYY-MM-DD text or a date, not a date and time")
        if isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(value, str):
            return value
        raise ResolveInputError(name, f"{name}: a date is sent as YYYY-MM-DD text")
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    raise ResolveInputError(name, f"{name}: expected text or a number, not a list or an object")


def _one_of(name: str, value: Any, allowed: list[str]) -> str:
    if value is None:
        return allowed[0]
    if not isinstance(value, str) or value not in allowed:
        raise ResolveInputError(name, f"{name}: must be one of {', '.join(allowed)}")
    return value


def checked_values(record: Any, config: ProjectConfig, matching: list[str]) -> tuple[str, str, dict[str, str]]:
    """(party type, record type, attribute -> text) of ``record``; :class:`ResolveInputError` on what cannot be read.
    ``matching``: the attributes matching compares; a record needs a value of one of them."""
    if not isinstance(record, Mapping):
        raise ResolveInputError(None, "the record must be an object of attribute names and values")
    attributes = config.customer_schema.attributes
    texts: dict[str, str] = {}
    for name, value in record.items():
        if not isinstance(name, str) or (name not in attributes and name not in (PARTY_TYPE, RECORD_TYPE)):
            shown = name if isinstance(name, str) and _SHOWABLE.match(name) else None
            raise ResolveInputError(shown, f"{shown or 'a field'}: not an attribute of the customer schema "
                                    f"(nor {PARTY_TYPE} or {RECORD_TYPE})")
        if name in (PARTY_TYPE, RECORD_TYPE) or value is None:
            continue
        texts[name] = _text(name, attributes[name].kind, value)
    if not any(texts.get(name, "").strip() for name in matching):  # blank text standardises to no value
        raise ResolveInputError(None, f"the record has none of the attributes matching compares ({', '.join(matching)})")
    party_type = _one_of(PARTY_TYPE, record.get(PARTY_TYPE), [PartyType.person.value, PartyType.organisation.value])
    record_type = _one_of(RECORD_TYPE, record.get(RECORD_TYPE),
                          [RecordType.customer.value, *(r.value for r in RecordType if r is not RecordType.customer)])
    return party_type, record_type, texts


_compiled: dict[tuple[int, dt.date], tuple[CustomerSchema, list[CompiledRule]]] = {}


def _rules(schema: CustomerSchema, today: dt.date) -> list[CompiledRule]:
    """The schema's rules as the gate compiles them, once a day (a range up to `today` moves with the date)."""
    key = (id(schema), today)
    found = _compiled.get(key)
    if found is None:  # the schema is kept with its rules: its id stays its own
        found = (schema, compile_rules(schema, today))
        _compiled.clear()
        _compiled[key] = found
    return found[1]


def read_record(record: Any, config: ProjectConfig, matching: list[str]) -> ReadRecord:
    """``record`` checked, standardised as a source row, and judged by the schema's rules."""
    party_type, record_type, texts = checked_values(record, config, matching)
    schema = config.customer_schema
    now = dt.datetime.now(dt.UTC)
    # Only the attributes given: each mapped one costs standardisation work, and the others stay null anyway.
    source = Source(name=SOURCE_NAME, kind="csv", path=Path(SOURCE_NAME), id_column="source_record_id",
                    columns={name: name for name in texts}, trust_rank=1, record_type=RecordType(record_type),
                    party_type=PartyType(party_type), date_formats=[DATE_FORMAT])
    raw = pl.DataFrame(
        {"source_system": [SOURCE_NAME], "source_record_id": ["1"], "source_row_number": [1], "ingested_at": [now],
         "parse_error": [None], "unparsed": [None], **{name: [text] for name, text in texts.items()}},
        schema={"source_system": pl.String, "source_record_id": pl.String, "source_row_number": pl.Int64,
                "ingested_at": pl.Datetime("us", "UTC"), "parse_error": pl.String, "unparsed": pl.String,
                **dict.fromkeys(texts, pl.String)})
    frame = standardise(raw, source, config).drop("source_values")
    issues = [dict(issue) for issue in frame["issues"][0]]
    for name in schema.of_kind(Kind.date):
        # A date the pipeline would flag and null is refused here: the caller sent something that is no date.
        if name in texts and any(i["rule"] == f"{name}.invalid" for i in issues):
            raise ResolveInputError(name, f"{name}: not a date in the form YYYY-MM-DD")
    rules = _rules(schema, now.date())
    passed = frame.select(rule.passes.alias(f"r{i}") for i, rule in enumerate(rules)).row(0)
    issues += [{"rule": rule.rule_id, "attribute": rule.attribute, "severity": rule.severity.value, "reason": rule.reason}
               for rule, ok in zip(rules, passed, strict=True) if not ok]
    issues.sort(key=lambda issue: issue["rule"])
    names = [PARTY_TYPE, RECORD_TYPE, *schema.attributes]
    values = frame.select(names).row(0, named=True)
    standardised = {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in values.items()}
    return ReadRecord(frame.drop("issues"), standardised, issues)
