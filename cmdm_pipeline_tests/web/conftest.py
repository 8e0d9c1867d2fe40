"""A tiny workbench: a project with web users and lenses, a hand-made snapshot, and a logged-in client."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient

from cmdm_pipeline.config import ProjectConfig
from cmdm_pipeline.web.app import create_app
from cmdm_pipeline.web.auth import hash_password
from cmdm_pipeline.web.snapshot import Snapshot, snapshot_from_frames

PASSWORDS = {"steward": "pw-steward", "viewer": "pw-viewer"}
API_TOKEN = "tok-api-client-123"
TOKEN_KEY = b"k" * 32
LEVELS = pl.Struct({"first_name": pl.Int8, "email": pl.Int8})
T0 = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)

WEB_SETTINGS: dict[str, Any] = {
    "lenses": [
        {"name": "stewardship", "description": "stewards", "purpose": None,
         "columns": {"first_name": "reveal", "last_name": "reveal", "email": "reveal", "postcode": "mask",
                     "phone": "tokenise", "country": "reveal"}},
        {"name": "service", "description": "service desk, GB only", "purpose": None,
         "columns": {"first_name": "reveal", "email": "mask", "country": "reveal"}, "where": {"country": ["GB"]}},
    ],
}


def web_block() -> dict[str, Any]:
    return {
        "users": [
            {"name": "steward", "role": "steward", "password_hash": hash_password(PASSWORDS["steward"])},
            {"name": "viewer", "role": "viewer", "password_hash": hash_password(PASSWORDS["viewer"])},
            {"name": "shop-api", "role": "api", "token_hash": hashlib.sha256(API_TOKEN.encode()).hexdigest()},
        ],
        "role_lenses": {"steward": "stewardship", "viewer": "service", "api": "service"},
    }


MODEL: dict[str, Any] = {
    "probability_two_random_records_match": 0.01,
    "comparisons": [
        {"output_column_name": "first_name", "comparison_levels": [
            {"is_null_level": True, "label_for_charts": "first_name is NULL"},
            {"label_for_charts": "Exact match on first_name", "m_probability": 0.9, "u_probability": 0.01},
            {"label_for_charts": "Jaro-Winkler >= 0.9", "m_probability": 0.05, "u_probability": 0.05},
            {"label_for_charts": "All other comparisons", "m_probability": 0.05, "u_probability": 0.94}]},
        {"output_column_name": "email", "comparison_levels": [
            {"is_null_level": True, "label_for_charts": "email is NULL"},
            {"label_for_charts": "Exact match on email", "m_probability": 0.8, "u_probability": 0.001},
            {"label_for_charts": "All other comparisons", "m_probability": 0.2, "u_probability": 0.999}]},
    ],
}


def frames() -> dict[str, pl.DataFrame]:
    """Four records, three masters: crm:1 (M1, GB) and crm:2 (M2, US) look alike; shop:7 and shop:8 are M3 (GB)."""
    people = pl.DataFrame({
        "source_system": ["crm", "crm", "shop", "shop"], "source_record_id": ["1", "2", "7", "8"],
        "record_type": ["customer"] * 4, "party_type": ["person"] * 4,
        "first_name": ["Ada", "Ada", "Alan", "Alan"], "last_name": ["Lovelace", "Lovelace", "Turing", "Turing"],
        "email": ["ada@example.org", "ada.l@example.org", "alan@example.org", None],
        "phone": ["+441234567890", None, "+441612345678", "+441612345678"],
        "postcode": ["SW1A 1AA", "10001", "M1 1AE", "M1 1AE"], "country": ["GB", "US", "GB", "GB"],
        "date_of_birth": [dt.date(1985, 12, 10), dt.date(1985, 12, 10), dt.date(1912, 6, 23), None],
    })
    masters = {"crm:1": "M1", "crm:2": "M2", "shop:7": "M3", "shop:8": "M3"}
    xref = pl.DataFrame({"source_system": ["crm", "crm", "shop", "shop"], "source_record_id": ["1", "2", "7", "8"],
                         "master_id": list(masters.values())})
    queue = pl.DataFrame({
        "review_type": ["pair", "cluster"], "source_system_l": ["crm", "crm"], "source_record_id_l": ["1", "2"],
        "source_system_r": ["crm", "shop"], "source_record_id_r": ["2", "7"],
        "records": [["crm:1", "crm:2"], ["crm:2", "shop:7", "shop:8"]], "evidence": [7.2, 9.0],
        "match_probability": [0.6, 0.95], "comparison_levels": [{"first_name": 2, "email": 0}, {"first_name": 0, "email": -1}],
        "merged": [False, True], "doubt": [0.45, 0.2], "records_affected": [1, 1], "priority": [0.45, 0.2],
        "review_reason": ["kept apart by the model with 45% doubt: 1 record(s) would change master",
                          "linked by the model with 20% doubt: 1 record(s) would change master"],
    }, schema_overrides={"comparison_levels": LEVELS})
    pairs = pl.DataFrame({
        "source_system_l": ["crm", "crm", "shop"], "source_record_id_l": ["1", "2", "7"],
        "source_system_r": ["crm", "shop", "shop"], "source_record_id_r": ["2", "7", "8"],
        "match_weight": [0.6, 4.2, 9.5], "evidence": [7.2, 10.8, 16.1], "match_probability": [0.6, 0.95, 0.999],
        "blocked": [True] * 3, "comparison_levels": [{"first_name": 2, "email": 0}, {"first_name": 0, "email": -1},
                                                     {"first_name": 2, "email": -1}], "model_version": [1] * 3,
    }, schema_overrides={"comparison_levels": LEVELS})
    golden = pl.DataFrame({
        "master_id": ["M1", "M2", "M3"], "party_type": ["person"] * 3, "record_type": ["customer"] * 3,
        "first_name": ["Ada", "Ada", "Alan"], "last_name": ["Lovelace", "Lovelace", "Turing"],
        "email": ["ada@example.org", "ada.l@example.org", "alan@example.org"],
        "phone": ["+441234567890", None, "+441612345678"], "postcode": ["SW1A 1AA", "10001", "M1 1AE"],
        "country": ["GB", "US", "GB"], "date_of_birth": [dt.date(1985, 12, 10), dt.date(1985, 12, 10), dt.date(1912, 6, 23)],
        "record_count": [1, 1, 2], "source_count": [1, 1, 1], "source_systems": [["crm"], ["crm"], ["shop"]],
        "valid_from": [T0] * 3,
    })
    lineage = pl.DataFrame({"master_id": ["M3", "M3"], "attribute": ["email", "first_name"],
                            "source_system": ["shop", "shop"], "source_record_id": ["7", "8"], "rule": ["trust_rank", "most_recent"]})
    history = golden.with_columns(pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("valid_to"), pl.lit("run-1").alias("run_id"))
    master_lineage = pl.DataFrame(schema={"run_id": pl.String, "event": pl.String, "master_id": pl.String,
                                          "related_master_id": pl.String, "records": pl.Int64,
                                          "recorded_at": pl.Datetime("us", "UTC")})
    consent = pl.DataFrame({"master_id": ["M3"], "purpose": ["marketing"], "channel": ["email"], "granted": [True],
                            "decided_at": [T0], "event_id": ["E1"], "event_channel": ["email"], "resolution": ["consent"],
                            "lawful_basis": ["consent"], "policy_version": ["p1"], "evidence_ref": ["ref"]})
    return {"validated_customers": people, "customer_xref": xref, "match_review_queue": queue, "match_pairs": pairs,
            "golden_customers": golden, "golden_attribute_lineage": lineage, "golden_customers_history": history,
            "master_id_lineage": master_lineage, "consent_current": consent}


def tiny_snapshot() -> Snapshot:
    snapshot = snapshot_from_frames(frames(), MODEL, {"stewardship": TOKEN_KEY, "service": TOKEN_KEY})
    snapshot.published_at = T0.isoformat()  # decisions made in the tests are after it
    return snapshot


@dataclass
class Workbench:
    config: ProjectConfig
    client: TestClient
    snapshot: Snapshot

    def login(self, user: str = "steward", password: str | None = None) -> Any:
        form = self.client.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token, form.text
        return self.client.post("/login", data={"username": user, "password": password or PASSWORDS[user],
                                                "csrf": token.group(1)}, follow_redirects=False)

    def csrf(self) -> str:
        page = self.client.get("/queue")
        found = re.search(r'"X-CSRF-Token": "([^"]+)"', page.text)
        assert found, page.text
        return found.group(1)

    def post(self, path: str, data: dict[str, Any], htmx: bool = True) -> Any:
        headers = {"X-CSRF-Token": self.csrf()}
        if htmx:
            headers["HX-Request"] = "true"
        return self.client.post(path, data=data, headers=headers, follow_redirects=False)


@pytest.fixture
def workbench(make_project: Callable[..., ProjectConfig]) -> Callable[..., Workbench]:
    def make(**web: Any) -> Workbench:
        config = make_project(**WEB_SETTINGS, web={**web_block(), **web})
        snapshot = tiny_snapshot()
        app = create_app(config, snapshot=snapshot, session_secret="test-secret")
        return Workbench(config, TestClient(app, raise_server_exceptions=False), snapshot)

    return make
