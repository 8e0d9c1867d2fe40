"""The canary test: personal values planted in the sources appear nowhere the pipeline writes.

Every byte of every file under the warehouse folder (DuckDB files and their WAL, key store,
models, reports, Data Docs) and of the Dagster instance (event log, run storage, compute logs)
is scanned for the planted values after two runs, lens files included (a lens that reveals
personal data is published only as encrypted Parquet, so it holds no plaintext either). The control run with encryption off must
find them, so a scan that cannot see is caught too.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from cmdm_pipeline.config import load_config
from cmdm_pipeline.definitions import JOB_NAME, build_definitions
from cmdm_pipeline.protect.keys.at_rest import AtRest
from cmdm_pipeline.protect.lenses.build import load_lens_keys, read_encrypted_parquet
from cmdm_pipeline_tests.conftest import GOOD_CSV, csv_source

pytestmark = pytest.mark.integration

# Distinctive enough never to occur by chance; searched case-insensitively.
FIRST, LAST, EMAIL, PHONE_E164 = "Zyxcanaryfirst", "Qwcanarylast", "zq7.canary@example.org", "+442079460999"
CANARIES = (FIRST, LAST, EMAIL, PHONE_E164, "Wqcanaryquarantined", "7946 0999")

CRM = GOOD_CSV + (
    f"7,{FIRST},{LAST},{EMAIL.upper()},020 7946 0999,SW1A 2AA,GB,03/04/1977\n"
    # Held back by the name length rule: the quarantine keeps the row as read.
    f"8,Wqcanaryquarantined,{'x' * 60},quarantined.canary@example.org,,,GB,01/01/1980\n"
)
SHOP_SOURCE = csv_source(name="shop", kind="jsonl", path="shop.jsonl", id_column="customer_id", trust_rank=2,
                         columns={"email": "email", "first": "first_name", "last": "last_name", "tel": "phone"})
SHOP = json.dumps({"customer_id": 70, "email": EMAIL, "first": FIRST, "last": LAST, "tel": "+44 20 7946 0999"}) + "\n"
CONSENT = {"source": {"kind": "csv", "path": "consent.csv", "columns": {
    "EventId": "event_id", "Email": "email", "Phone": "phone", "Purpose": "purpose", "Channel": "channel",
    "Action": "action", "At": "occurred_at"}}}
EVENTS = (
    "EventId,Email,Phone,Purpose,Channel,Action,At\n"
    f"e1,{EMAIL},,marketing,email,granted,2026-01-01T10:00:00Z\n"
    f"e2,,020 7946 0999,marketing,sms,granted,2026-01-02T10:00:00Z\n"
    f"e3,{EMAIL},,marketing,email,granted,not a time\n"  # quarantined, with the row as read
)


LENSES = [  # one lens reveals (an encrypted Parquet file), one masks and tokenises (plain files)
    {"name": "service", "description": "service desk", "purpose": None,
     "columns": {"first_name": "reveal", "last_name": "reveal", "email": "reveal", "phone": "reveal"}},
    {"name": "analytics", "description": "analysts", "purpose": None, "formats": ["duckdb", "parquet", "csv"],
     "columns": {"first_name": "mask", "last_name": "tokenise", "email": "mask", "phone": "tokenise", "country": "reveal"}},
]


def scan(folders: list[Path]) -> dict[str, list[str]]:
    """Canary -> files whose bytes hold it (any letter case, UTF-8)."""
    found: dict[str, list[str]] = {}
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            data = path.read_bytes().lower()
            for canary in CANARIES:
                if canary.lower().encode() in data:
                    found.setdefault(canary, []).append(str(path.relative_to(folder.parent)))
    return found


@pytest.mark.parametrize("encrypt", [True, False], ids=["encrypted", "control-plaintext"])
def test_planted_personal_values_rest_nowhere(make_project, tmp_path: Path, encrypt: bool) -> None:  # type: ignore[no-untyped-def]
    files = {"crm.csv": CRM, "shop.jsonl": SHOP, "consent.csv": EVENTS}
    config = make_project(files=files, sources=[csv_source(default_country="GB"), SHOP_SOURCE], consent=CONSENT,
                          lenses=LENSES, protection={"encrypt": encrypt},
                          quality={"max_match_rate_drift": 1, "max_cluster_size_drift": 1})
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    with dg.DagsterInstance.local_temp(str(dagster_home)) as instance:
        job = build_definitions(load_config(config.base_dir / "cmdm.yaml")).resolve_job_def(JOB_NAME)
        for _ in range(2):  # the second run reuses ciphertext and extends the history
            assert job.execute_in_process(instance=instance, raise_on_error=True).success
        said = " ".join(entry.user_message for entry in instance.all_logs(instance.get_runs()[0].run_id)).lower()

    found = scan([config.warehouse_path.parent, dagster_home])
    lenses = config.warehouse_path.parent / "lenses"
    assert {p.name for p in lenses.iterdir()} >= {"service.parquet", "analytics.duckdb", "analytics.csv"}
    key = load_lens_keys(AtRest(config).keys, ["service"], create=False)["service"].file
    assert FIRST in read_encrypted_parquet(lenses / "service.parquet", key)["first_name"].to_list()  # it is there
    if encrypt:
        assert found == {}
        assert not [c for c in CANARIES if c.lower() in said]
    else:
        # The control: the same scan sees every planted value once nothing is encrypted.
        assert set(found) == set(CANARIES), f"the scan missed {set(CANARIES) - set(found)}"
        assert all(any(f.startswith("warehouse/cmdm.duckdb") for f in files) for files in found.values())
