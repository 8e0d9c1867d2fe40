"""Rule breakers: a few rows (about 0.3%) that a validation gate must catch, planted after rendering."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import date, timedelta

from cmdm_pipeline.sample.common import REFERENCE_DATE, pick, random_date
from cmdm_pipeline.sample.sources import Row

#: The one spreadsheet-formula value planted in a name field (CSV injection probe).
FORMULA_VALUE = "=cmd|' /C calc'!A0"

EMAIL_FIELDS = {"crm": "Email", "erp": "EMAIL", "shop": "email", "pos": "Email", "survey": "RespondentEmail"}
DOB_FIELDS = {"erp": ("BIRTH_DT", "%d.%m.%Y"), "shop": ("date_of_birth", "%Y-%m-%d"), "pos": ("DOB", "%d/%m/%Y")}
NAME_FIELDS = {
    "crm": ("FirstName", "LastName"), "erp": ("FIRST_NAME", "LAST_NAME"), "shop": ("first_name", "last_name"),
    "pos": ("Forename", "Surname"), "survey": ("FirstName", "LastName"),
}
PHONE_FIELDS = {"crm": "MobilePhone", "erp": "TEL", "shop": "phone", "pos": "Mobile"}


class Breaker:
    """Plants rule-breaking values into distinct, randomly chosen rows."""

    def __init__(self, tables: dict[str, list[Row]], rng: random.Random, records: int) -> None:
        self.tables = tables
        self.rng = rng
        self.records = records
        self.touched: set[tuple[str, int]] = set()

    def count(self, rate: float) -> int:
        """Returns how many rows get a defect at ``rate`` (at least one)."""
        return max(1, round(self.records * rate))

    def take(self, sources: Sequence[str], accept: Callable[[Row], bool] = lambda row: True) -> tuple[str, Row] | None:
        """Returns an untouched row of one of ``sources`` that ``accept`` allows, or None."""
        for _ in range(1000):
            source = pick(self.rng, [s for s in sources if self.tables[s]])
            index = self.rng.randrange(len(self.tables[source]))
            row = self.tables[source][index]
            if (source, index) not in self.touched and accept(row):
                self.touched.add((source, index))
                return source, row
        return None

    def run(self) -> None:
        """Plants every kind of defect; returns None."""
        self.invalid_emails()
        self.future_dobs()
        self.bad_scores()
        self.nameless()
        self.non_phones()
        self.formula()
        self.empty_id()
        self.pos_duplicates()

    def invalid_emails(self) -> None:
        """E-mail addresses with broken syntax, in any source; returns None."""
        for n in range(self.count(0.0008)):
            picked = self.take(list(EMAIL_FIELDS), lambda row: "@" in str(row.values.get(_email_key(row)) or ""))
            if picked:
                source, row = picked
                row.values[EMAIL_FIELDS[source]] = broken_email(str(row.values[EMAIL_FIELDS[source]]), n)

    def future_dobs(self) -> None:
        """Dates of birth after the reference date (ERP, shop, POS); returns None."""
        for _ in range(self.count(0.0004)):
            picked = self.take(list(DOB_FIELDS), lambda row: bool(row.values.get(_dob_key(row))))
            if picked:
                source, row = picked
                key, fmt = DOB_FIELDS[source]
                future = random_date(self.rng, REFERENCE_DATE + timedelta(days=1), date(2099, 12, 31))
                row.values[key] = future.strftime(fmt)

    def bad_scores(self) -> None:
        """NPS scores 11, -1 and "ten"; returns None."""
        for n in range(max(3, self.count(0.0004))):
            picked = self.take(["survey"])
            if picked:
                picked[1].values["Score"] = ("11", "-1", "ten")[n % 3]

    def nameless(self) -> None:
        """Rows with neither first nor last name; returns None."""
        for _ in range(self.count(0.0004)):
            picked = self.take(["crm", "shop", "pos", "survey"])
            if picked:
                source, row = picked
                first, last = NAME_FIELDS[source]
                empty = None if source == "shop" else ""
                row.values[first], row.values[last] = empty, empty

    def non_phones(self) -> None:
        """Phone fields holding "n/a", "12" and the like; returns None."""
        for n in range(self.count(0.0003)):
            picked = self.take(list(PHONE_FIELDS))
            if picked:
                source, row = picked
                row.values[PHONE_FIELDS[source]] = ("n/a", "12", "N/A", "-")[n % 4]

    def formula(self) -> None:
        """The one spreadsheet formula, in a CRM last name; returns None."""
        picked = self.take(["crm"])
        if picked:
            picked[1].values["LastName"] = FORMULA_VALUE

    def empty_id(self) -> None:
        """The one CRM row without an Id; returns None."""
        picked = self.take(["crm"])
        if picked:
            picked[1].values["Id"] = ""

    def pos_duplicates(self) -> None:
        """Two different people on one CardNo, and one row exported twice; returns None."""
        rows = self.tables["pos"]
        first, second = self.take(["pos"]), self.take(["pos"])
        if first and second:
            second[1].values["CardNo"] = first[1].values["CardNo"]
        copied = self.take(["pos"])
        if copied:
            original = copied[1]
            index = next(i for i, row in enumerate(rows) if row is original)
            rows.insert(index + 1, Row(dict(original.values), original.person_id, original.organisation_id))


def _email_key(row: Row) -> str:
    """Returns the name of the row's e-mail field."""
    return next(key for key in EMAIL_FIELDS.values() if key in row.values)


def _dob_key(row: Row) -> str:
    """Returns the name of the row's date-of-birth field."""
    return next(key for key, _ in DOB_FIELDS.values() if key in row.values)


def broken_email(email: str, n: int) -> str:
    """Returns an e-mail address with broken syntax: a doubled "@", no "@", or no domain."""
    local, _, domain = email.strip().partition("@")
    kind = n % 4
    if kind == 0:
        return f"{local}@@{domain.split('.')[0]}"
    if kind == 1:
        return f"{local}.{domain}".replace("@", "")
    if kind == 2:
        return f"{local}@"
    return f"{local} @{domain}"
