"""Shared fixtures: tiny projects written into a temporary folder, never the working directory."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cmdm_pipeline.config import ProjectConfig, load_config

REPO_ROOT = Path(__file__).resolve().parent.parent
NOW = dt.datetime(2026, 6, 30, 12, 0, tzinfo=dt.UTC)

#: A small customer schema covering every kind the tests need.
SCHEMA: dict[str, Any] = {
    "attributes": {
        "first_name": {"kind": "person_name", "pii": True},
        "last_name": {"kind": "person_name", "pii": True, "rules": [{"length": {"max": 50}}]},
        "email": {"kind": "email", "pii": True},
        "phone": {"kind": "phone", "pii": True},
        "postcode": {"kind": "postcode", "pii": True},
        "country": {"kind": "country"},
        "date_of_birth": {"kind": "date", "pii": True, "rules": [{"range": {"min": "1900-01-01", "max": "today"}}]},
        "nps_score": {"kind": "number", "invalid": "reject", "rules": [{"range": {"min": 0, "max": 10}}]},
    },
    "rules": [
        {
            "name": "has_a_name",
            "expression": "first_name IS NOT NULL OR last_name IS NOT NULL",
            "description": "a record needs a name",
        }
    ],
}

CSV_COLUMNS = {
    "First": "first_name",
    "Last": "last_name",
    "Email": "email",
    "Phone": "phone",
    "Zip": "postcode",
    "Country": "country",
    "DOB": "date_of_birth",
}

GOOD_CSV = (
    "Id,First,Last,Email,Phone,Zip,Country,DOB\n"
    "1,ADA,lovelace,Ada@Example.org,020 7946 0018,sw1a1aa,UK,10/12/1985\n"
    "2,Alan,Turing,alan@example.org,+44 161 496 0000,M1 1AE,GB,23/06/1992\n"
    "3,Grace,Hopper,grace@example.com,(202) 555-0143,20500,USA,09/12/1956\n"
)


def csv_source(name: str = "crm", path: str = "crm.csv", **overrides: Any) -> dict[str, Any]:
    """A CSV source block mapping :data:`CSV_COLUMNS`."""
    return {
        "name": name,
        "kind": "csv",
        "path": path,
        "id_column": "Id",
        "trust_rank": 1,
        "record_type": "customer",
        "party_type": "person",
        "date_formats": ["%d/%m/%Y"],
        "columns": dict(CSV_COLUMNS),
        **overrides,
    }


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., ProjectConfig]:
    """Write files and a cmdm.yaml into ``tmp_path`` and load it."""

    def make(
        files: dict[str, str | bytes] | None = None,
        sources: list[dict[str, Any]] | None = None,
        schema: dict[str, Any] | None = None,
        **settings: Any,
    ) -> ProjectConfig:
        for name, content in (files if files is not None else {"crm.csv": GOOD_CSV}).items():
            target = tmp_path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content, encoding="utf-8")
        document = {
            "warehouse": {"path": "warehouse/cmdm.duckdb"},
            "schema": schema or SCHEMA,
            "sources": sources or [csv_source()],
            **settings,
        }
        (tmp_path / "cmdm.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        return load_config(tmp_path / "cmdm.yaml")

    return make


#: The environment variables that carry key-encryption keys.
KEK_ENV_NAMES = ("CMDM_KEK", "CMDM_KEK_ID", "CMDM_KEK_PREVIOUS", "CMDM_KEK_PREVIOUS_ID")


@pytest.fixture
def no_kek_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys come from the project's development key file, whatever the machine's environment holds."""
    for name in KEK_ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
