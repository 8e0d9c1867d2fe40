"""Erasure in the real Dagster job: a canary subject is erased everywhere, history included (also another
master's, after a wrong merge), and stays erased; their steward decisions are listed and never logged again."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import polars as pl
import pytest

from cmdm_pipeline.config import load_config
from cmdm_pipeline.protect.erasure.requests import record_request
from cmdm_pipeline.protect.keys.at_rest import open_warehouse
from cmdm_pipeline.protect.keys.keystore import keystore_path
from cmdm_pipeline_tests.conftest import GOOD_CSV, csv_source
from cmdm_pipeline_tests.protect.test_consent_job import run

pytestmark = pytest.mark.integration

CANARY_CSV = GOOD_CSV + "7,Zebulon,Quxworthy,Zebulon.Canary@Example.net,020 7946 0999,EC1A 1BB,GB,01/02/1970\n"
SHOP = csv_source(name="shop", kind="jsonl", path="shop.jsonl", id_column="customer_id", trust_rank=2,
                  columns={"email": "email", "first": "first_name", "last": "last_name", "tel": "phone"})
SHOP_ROWS = (
    json.dumps({"customer_id": 10, "email": "ada@example.org", "first": "Ada", "last": "Lovelace"}) + "\n"
    + json.dumps({"customer_id": 77, "email": "zebulon.canary@example.net", "first": "Zebulon", "last": "Quxworthy",
                  "tel": "+44 20 7946 0999"}) + "\n"
    + json.dumps({"customer_id": None, "email": "zebulon.canary@example.net", "first": "Zebulon", "last": "Q"}) + "\n"
)
CONSENT = {"source": {"kind": "csv", "path": "consent.csv", "columns": {
    "EventId": "event_id", "Email": "email", "System": "source_system", "RecordId": "source_record_id",
    "Purpose": "purpose", "Channel": "channel", "Action": "action", "At": "occurred_at"}}}
EVENTS = (
    "EventId,Email,System,RecordId,Purpose,Channel,Action,At\n"
    "c1,ada@example.org,,,marketing,any,granted,2026-01-01T10:00:00Z\n"
    "c2,zebulon.canary@example.net,,,marketing,email,granted,2026-01-02T10:00:00Z\n"
    "c3,,shop,77,sharing,email,granted,2026-01-03T10:00:00Z\n"
    "c4,zebulon.canary@example.net,,,no_such_purpose,email,granted,2026-01-03T10:00:00Z\n"
)
ERASURE = {"source": {"kind": "csv", "path": "erasure.csv", "columns": {
    "Ticket": "request_id", "Email": "email", "Phone": "phone", "Master": "master_id", "System": "source_system",
    "Record": "source_record_id", "When": "requested_at"}}}
REQUESTS = (
    "Ticket,Email,Phone,Master,System,Record,When\n"
    "T-1, Zebulon.Canary@example.NET ,,,,,2026-06-01T09:00:00Z\n"
    "T-2,nobody@example.com,,,,,2026-06-01\n"
    "T-3,,,,crm,,2026-06-01\n"
    "T-4,not-an-email,,,,,\n"
)
#: Every spelling of the canary that could be stored: e-mail, names, phone (as typed and E.164), postcode.
CANARY = ("zebulon.canary@example.net", "Zebulon.Canary@Example.net", "Zebulon", "ZEBULON", "Quxworthy",
          "+442079460999", "7946 0999", "EC1A 1BB")


def scan(folder: Path) -> dict[str, list[str]]:
    """Every file under ``folder`` (raw bytes, WAL included) that holds a canary value, and which."""
    found: dict[str, list[str]] = {}
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits = [v for v in CANARY if v.encode() in data or v.encode("utf-16-le") in data]
            if hits:
                found[str(path.relative_to(folder))] = hits
    return found


@pytest.mark.parametrize("encrypt", [True, False], ids=["encrypted", "plaintext-control"])
def test_a_canary_subject_is_erased_everywhere_and_stays_erased(make_project, encrypt: bool) -> None:  # type: ignore[no-untyped-def]
    files = {"crm.csv": CANARY_CSV, "shop.jsonl": SHOP_ROWS, "consent.csv": EVENTS, "erasure.csv": REQUESTS}
    config = make_project(files=files, sources=[csv_source(), SHOP], consent=CONSENT, erasure=ERASURE,
                          protection={"encrypt": encrypt},
                          quality={"max_match_rate_drift": 1, "max_cluster_size_drift": 1, "max_quarantine_rate": 1})
    warehouse = config.warehouse_path.parent
    first, _ = run(config.base_dir)  # nothing ingested yet: the requests wait for this run's data
    store = open_warehouse(config)
    xref = store.read("customer_xref")
    canary_master = xref.filter(pl.col("source_record_id") == "7")["master_id"][0]
    assert xref.filter(pl.col("master_id") == canary_master).height == 2  # crm 7 and shop 77: one person
    assert store.read("erasure_log").is_empty()
    # The control: the canary is there now, as plaintext in the files or as ciphertext that decrypts.
    assert bool(scan(warehouse)) is not encrypt
    assert "zebulon" in _decrypted(store)

    second, said = run(config.base_dir)
    for value in CANARY:
        assert value not in said, value  # logs and metadata name no values
    log = store.read("erasure_log").sort("request_id")
    assert log.select("request_id", "status", "resolved_by").rows() == [
        ("T-1", "erased", "email"), ("T-2", "not_found", None)]
    erased = log.row(0, named=True)
    assert erased["masters_erased"] == 1 and erased["records_erased"] == 2
    # Encrypted: the master's, both records', the id-less row's and the consent events' keys. Plaintext: no keys.
    assert erased["keys_destroyed"] == (7 if encrypt else 0)
    removed = json.loads(erased["rows_removed"])
    assert {"raw_crm", "raw_shop", "standardised_customers", "validated_customers", "customer_xref",
            "golden_customers", "golden_customers_history", "consent_history", "audit_log"} <= set(removed)
    assert store.read("erasure_quarantine").select("source_row_number", "rules_broken").rows() == [
        (3, ["subject.incomplete"]), (4, ["email.invalid"])]
    notes = store.read("erasure_notifications").sort("source_system")
    assert notes.select("request_id", "source_system", "source_record_id").rows() == [("T-1", "crm", "7"), ("T-1", "shop", "77")]
    assert scan(warehouse) == {}  # no plaintext of the canary in any file, WAL and key store included
    if encrypt:
        _assert_keys_destroyed(config, canary_master)
    _assert_nothing_decrypts_to_the_canary(store)
    audit = store.read("audit_log")
    assert audit.filter(pl.col("master_id") == canary_master).is_empty()
    assert audit.filter(pl.col("action") == "erased").height == 1
    reconciliation = store.read("run_reconciliation").filter(pl.col("run_id") == second.run_id).sort("source_system")
    assert reconciliation.select("source_system", "rows_erased", "balanced").rows() == [("crm", 1, True), ("shop", 2, True)]

    # The sources still hold the canary, and `cmdm erase` records a request by phone: nothing comes back.
    record_request(load_config(config.base_dir / "cmdm.yaml"), request_id="cli-1", master_id=canary_master)
    third, _ = run(config.base_dir)
    assert scan(warehouse) == {}
    assert store.read("customer_xref").filter(pl.col("source_record_id").is_in(["7", "77"])).is_empty()
    assert store.read("erasure_log").filter(pl.col("request_id") == "cli-1")["status"].to_list() == ["not_found"]
    assert store.read("erasure_log").height == 3  # T-1 and T-2 are not processed twice
    reconciliation = store.read("run_reconciliation").filter(pl.col("run_id") == third.run_id)
    assert reconciliation["balanced"].all() and reconciliation["rows_erased"].sum() == 3
    assert "zebulon" not in store.read("consent_history")["subject_email"].drop_nulls().str.join("")


def _assert_keys_destroyed(config, master_id: str) -> None:  # type: ignore[no-untyped-def]
    path = keystore_path(config)
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute("SELECT owner, wrapped_key IS NULL, destroyed_at IS NOT NULL FROM data_keys "
                           "WHERE owner IN ($1, $2, $3)", [f"master/{master_id}", "record/crm/7", "record/shop/77"]).fetchall()
    assert rows and all(gone and stamped for _, gone, stamped in rows), rows


def _decrypted(store) -> str:  # type: ignore[no-untyped-def]
    """Every table as read through the warehouse (ciphertext decrypted where its key lives), as lower-case text."""
    return " ".join(f"{table}: {store.read(table).rows()}" for table in store.tables()).lower()


def _assert_nothing_decrypts_to_the_canary(store) -> None:  # type: ignore[no-untyped-def]
    text = _decrypted(store)
    for value in ("zebulon", "quxworthy", "442079460999"):
        assert value not in text, value


DECISIONS_HEADER = "source_system_l,source_record_id_l,source_system_r,source_record_id_r,decision,decided_by,decided_at,reason\n"
SAME = "crm,1,shop,77,same,steward@corp.example,2026-06-01T09:00:00,looked alike\n"
DIFFERENT = "shop,77,crm,1,different,steward@corp.example,2026-06-02T09:00:00,not the same person\n"


def test_a_subject_wrongly_merged_into_another_master_leaves_nothing_in_its_history(make_project) -> None:  # type: ignore[no-untyped-def]
    """A steward merges the canary (shop 77) into Ada's master, then splits him off again; his phone won
    Ada's golden record in between. Erasing him removes that version of Ada's history (and his first
    master's), keeps Ada's others, lists his steward decisions for deletion and never logs them again."""
    ada_without_phone = GOOD_CSV.replace("Ada@Example.org,020 7946 0018", "Ada@Example.org,")
    canary = json.dumps({"customer_id": 77, "email": "zebulon.canary@example.net", "first": "Zebulon",
                         "last": "Quxworthy", "tel": "+44 20 7946 0999"}) + "\n"
    files = {"crm.csv": ada_without_phone, "shop.jsonl": canary, "decisions.csv": DECISIONS_HEADER,
             "erasure.csv": "Ticket,Email,Phone,Master,System,Record,When\n"}
    config = make_project(files=files, sources=[csv_source(), SHOP], erasure=ERASURE,
                          matching={"decisions": "decisions.csv"},
                          quality={"max_match_rate_drift": 1, "max_cluster_size_drift": 1, "max_quarantine_rate": 1})
    store = open_warehouse(config)
    run(config.base_dir)
    (config.base_dir / "decisions.csv").write_text(DECISIONS_HEADER + SAME, encoding="utf-8")
    run(config.base_dir)
    xref = store.read("customer_xref")
    ada = xref.filter(pl.col("source_record_id") == "1")["master_id"][0]
    assert xref.filter(pl.col("master_id") == ada).height == 2  # the wrong merge
    golden = store.read("golden_customers").filter(pl.col("master_id") == ada)
    assert golden["phone"].to_list() == ["+442079460999"]  # his phone won her golden record
    (config.base_dir / "decisions.csv").write_text(DECISIONS_HEADER + SAME + DIFFERENT, encoding="utf-8")
    run(config.base_dir)
    assert store.read("customer_xref").filter(pl.col("master_id") == ada).height == 1  # split off again
    versions = store.read("golden_customers_history").filter(pl.col("master_id") == ada).height
    assert store.read("audit_log").filter(pl.col("action") == "steward_decision").height == 2

    (config.base_dir / "erasure.csv").write_text("Ticket,Email,Phone,Master,System,Record,When\nT-1,,,,shop,77,\n",
                                                 encoding="utf-8")
    run(config.base_dir)  # the decisions file still names shop 77: ignored, the run succeeds
    log = store.read("erasure_log").row(0, named=True)
    assert log["status"] == "erased"
    left = store.read("golden_customers_history").filter(pl.col("master_id") == ada)
    assert left.height == versions - 1 and left["phone"].null_count() == left.height  # her other versions stay
    assert json.loads(log["rows_removed"])["golden_customers_history"] >= 3  # his master, his first one, her version
    assert store.read("master_id_lineage").is_empty()  # the merge and the split were his moves only
    _assert_nothing_decrypts_to_the_canary(store)
    assert scan(config.warehouse_path.parent) == {}
    notes = store.read("erasure_notifications").sort("source_system")
    assert notes.select("source_system", "source_record_id").rows() == [("match_decisions", "shop:77"), ("shop", "77")]
    assert store.read("audit_log").filter(pl.col("action") == "steward_decision").is_empty()  # not logged again
    assert store.read("customer_xref").filter(pl.col("source_system") == "shop").is_empty()


def test_a_run_without_the_erasure_step_still_lists_the_records_of_new_versions(make_project) -> None:  # type: ignore[no-untyped-def]
    """A partial materialisation that skips the erasure step (as the Dagster UI allows) writes new golden
    versions: they are listed in golden_history_sources all the same, so a later erasure finds them."""
    import dagster as dg

    from cmdm_pipeline.definitions import JOB_NAME, build_definitions

    config = make_project(quality={"max_match_rate_drift": 1, "max_cluster_size_drift": 1})
    run(config.base_dir)
    (config.base_dir / "crm.csv").write_text(GOOD_CSV.replace("020 7946 0018", "020 7946 0123"), encoding="utf-8")
    definitions = build_definitions(load_config(config.base_dir / "cmdm.yaml"))
    skipped = {"erasure_log", "erasure_notifications", "erasure_quarantine", "erasure_tombstones"}
    selection = [key for key in definitions.resolve_all_asset_keys() if key.to_user_string() not in skipped]
    assert len(selection) < len(definitions.resolve_all_asset_keys())
    result = definitions.resolve_job_def(JOB_NAME).execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), asset_selection=selection)
    assert result.success
    assert "_erasure" not in {event.step_key for event in result.all_events if event.step_key}
    store = open_warehouse(config)
    ada = store.read("customer_xref").filter(pl.col("source_record_id") == "1")["master_id"][0]
    current = store.read("golden_customers_history", columns=["master_id", "valid_from", "valid_to"]).filter(
        (pl.col("master_id") == ada) & pl.col("valid_to").is_null())
    listed = store.read("golden_history_sources").join(current.select("master_id", "valid_from"),
                                                         on=["master_id", "valid_from"])
    assert store.read("golden_customers_history").filter(pl.col("master_id") == ada).height == 2  # a new version
    assert listed.select("source_system", "source_record_id").rows() == [("crm", "1")]
