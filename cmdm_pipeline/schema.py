"""The customer schema the business declares: attributes, their kinds, rules and PII flags.

This one object drives every stage: standardisation (by kind), the validation gate (rules),
matching (kinds), survivorship and encryption (PII flags) and quality reporting (rules).
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")

#: Columns besides the attributes that a cross-field rule may name (the validation gate and the quality
#: report both hold them).
RULE_COLUMNS = ("source_system", "record_type", "party_type")

#: Columns the pipeline adds to a record; attributes may not use these names.
LINEAGE_COLUMNS = ("source_system", "source_record_id", "source_row_number", "ingested_at")
RESERVED_NAMES = frozenset(
    {*LINEAGE_COLUMNS, "run_id", "record_type", "party_type", "trust_rank", "source_values",
     "parse_error", "issues", "warnings", "rules_broken", "reason", "master_id"}
)


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Kind(StrEnum):
    """What an attribute holds; the kind picks its standardiser and its default matching."""

    person_name = "person_name"
    organisation_name = "organisation_name"
    email = "email"
    phone = "phone"
    date = "date"
    postcode = "postcode"
    address_line = "address_line"
    city = "city"
    region = "region"
    country = "country"
    identifier = "identifier"
    category = "category"
    text = "text"
    number = "number"
    boolean = "boolean"


MATCHED_BY_DEFAULT = frozenset(
    {Kind.person_name, Kind.organisation_name, Kind.email, Kind.phone, Kind.postcode,
     Kind.address_line, Kind.city, Kind.identifier}
)


class Severity(StrEnum):
    """``reject`` quarantines the row; ``warn`` lets it pass, flagged."""

    reject = "reject"
    warn = "warn"


Bound = Annotated[
    float | dt.date | Literal["today"],
    Field(description="A number, an ISO date, or `today` (the run date)."),
]


class RangeSpec(Model):
    min: Bound | None = Field(default=None, description="Smallest allowed value (inclusive).")
    max: Bound | None = Field(default=None, description="Largest allowed value (inclusive).")

    @model_validator(mode="after")
    def _one_bound(self) -> RangeSpec:
        if self.min is None and self.max is None:
            raise ValueError("a range needs `min`, `max` or both")
        return self


class LengthSpec(Model):
    min: int | None = Field(default=None, ge=0, description="Fewest characters allowed.")
    max: int | None = Field(default=None, ge=1, description="Most characters allowed.")

    @model_validator(mode="after")
    def _one_bound(self) -> LengthSpec:
        if self.min is None and self.max is None:
            raise ValueError("a length needs `min`, `max` or both")
        return self


RULE_TYPES = ("required", "pattern", "allowed", "range", "length", "expression")


class Rule(Model):
    """One declared rule. Exactly one of the rule types is set.

    On an attribute: ``required``, ``pattern``, ``allowed``, ``range``, ``length``.
    On the schema (cross-field): ``expression``, a SQL boolean expression over attribute
    names that must hold for a row (NULL counts as a failure).
    """

    required: Literal[True] | None = Field(default=None, description="The value must be present.")
    pattern: str | None = Field(default=None, description="Regular expression the whole value must match.")
    allowed: list[str] | None = Field(default=None, description="The only values allowed.")
    range: RangeSpec | None = Field(default=None, description="Inclusive bounds for numbers or dates.")
    length: LengthSpec | None = Field(default=None, description="Bounds on the number of characters.")
    expression: str | None = Field(default=None, description="Cross-field SQL boolean expression.")
    severity: Severity = Field(default=Severity.reject, description="What happens to a row that fails.")
    name: str | None = Field(default=None, description="Rule id; derived from attribute and type if absent.")
    description: str | None = Field(default=None, description="Readable reason shown for failing rows.")

    @model_validator(mode="after")
    def _exactly_one_type(self) -> Rule:
        present = [t for t in RULE_TYPES if getattr(self, t) is not None]
        if len(present) != 1:
            raise ValueError(f"a rule needs exactly one of {', '.join(RULE_TYPES)}; found {present or 'none'}")
        return self

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern does not compile: {exc}") from exc
        return value

    @property
    def type(self) -> str:
        return next(t for t in RULE_TYPES if getattr(self, t) is not None)


class Attribute(Model):
    """One attribute of the canonical customer schema."""

    kind: Kind = Field(description="What the attribute holds; picks standardisation and matching.")
    description: str = Field(default="", description="What the attribute means to the business.")
    pii: bool = Field(default=False, description="Personal data: encrypted at rest, hidden from logs and reports.")
    rules: list[Rule] = Field(default_factory=list, description="Rules a value must follow.")
    invalid: Severity = Field(
        default=Severity.warn,
        description="Severity when a value cannot be standardised (bad email, phone, date...).",
    )
    values: dict[str, str] = Field(
        default_factory=dict,
        description="category: spellings (case-insensitive) mapped to the canonical value.",
    )
    match: bool | None = Field(
        default=None,
        description="Compare this attribute when matching; default: yes for names, e-mails, phones, "
        "addresses, postcodes, cities and identifiers, no for other kinds.",
    )
    name_part: Literal["given", "middle", "family"] | None = Field(
        default=None, description="person_name: which part of the name it is (matching compares swapped names)."
    )
    validator: str | None = Field(
        default=None, description="identifier: a python-stdnum module (e.g. `iban`, `eu.vat`) that checks it."
    )

    @property
    def use_in_matching(self) -> bool:
        if self.match is not None:
            return self.match
        return self.kind in MATCHED_BY_DEFAULT and self.name_part != "middle"

    @model_validator(mode="after")
    def _rules_fit(self) -> Attribute:
        for rule in self.rules:
            if rule.expression is not None:
                raise ValueError("`expression` rules belong under schema.rules (they are cross-field)")
        if self.name_part is not None and self.kind is not Kind.person_name:
            raise ValueError("`name_part` is only for attributes of kind person_name")
        if self.validator is not None:
            if self.kind is not Kind.identifier:
                raise ValueError("`validator` is only for attributes of kind identifier")
            import importlib

            try:
                module = importlib.import_module(f"stdnum.{self.validator}")
            except ImportError as exc:
                raise ValueError(f"no python-stdnum module named {self.validator!r}") from exc
            if not hasattr(module, "is_valid"):
                raise ValueError(f"stdnum.{self.validator} has no is_valid()")
        return self


class CustomerSchema(Model):
    """The customer schema the business declares: attributes and cross-field rules."""

    attributes: dict[str, Attribute] = Field(description="Canonical attributes by name.")
    rules: list[Rule] = Field(default_factory=list, description="Cross-field `expression` rules.")

    @field_validator("attributes")
    @classmethod
    def _names(cls, attributes: dict[str, Attribute]) -> dict[str, Attribute]:
        for name in attributes:
            if not IDENTIFIER.match(name):
                raise ValueError(f"attribute name {name!r} must be lower_snake_case")
            if name in RESERVED_NAMES:
                raise ValueError(f"attribute name {name!r} is reserved for pipeline columns")
        return attributes

    @model_validator(mode="after")
    def _cross_field_rules(self) -> CustomerSchema:
        for i, rule in enumerate(self.rules):
            if rule.expression is None:
                raise ValueError(f"rules[{i}]: schema-level rules must be `expression` rules")
            if rule.name is None:
                raise ValueError(f"rules[{i}]: an expression rule needs a `name`")
            _check_expression(f"rules[{i}]({rule.name})", rule.expression, [*RULE_COLUMNS, *self.attributes])
        return self

    def of_kind(self, *kinds: Kind) -> list[str]:
        """Names of the attributes of the given kinds, in declaration order."""
        return [name for name, attr in self.attributes.items() if attr.kind in kinds]

    @property
    def pii_attributes(self) -> list[str]:
        return [name for name, attr in self.attributes.items() if attr.pii]


def _check_expression(at: str, expression: str, columns: list[str]) -> None:
    """A cross-field rule is one expression over the record's columns, which the gate (Polars SQL) can run."""
    import polars as pl

    from cmdm_pipeline.sql_checks import SqlCheckError, check_expression

    try:
        # Polars runs the rule; DuckDB's parser only vouches for its shape (no subquery, file or host function).
        check_expression(expression, columns, check_functions=False)
        pl.sql_expr(expression)
    except SqlCheckError as exc:
        raise ValueError(f"{at}: the expression {exc}") from None
    except (pl.exceptions.SQLInterfaceError, pl.exceptions.SQLSyntaxError, pl.exceptions.InvalidOperationError,
            pl.exceptions.ComputeError) as exc:
        raise ValueError(f"{at}: the expression cannot be run: {exc}") from None
