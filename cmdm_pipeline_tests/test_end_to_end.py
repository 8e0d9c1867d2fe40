"""The real Dagster job, materialised on small data into a temporary warehouse."""

from __future__ import annotations

import json

import dagster as dg
import duckdb
import polars as pl
import pytest

from cmdm_pipeline.console import root_cause as user_error_message
from cmdm_pipeline.definitions import JOB_NAME, build_definitions
from cmdm_pipeline.protect.keys.at_rest import open_warehouse
from cmdm_pipeline.warehouse import Warehouse
from cmdm_pipeline_tests.conftest import GOOD_CSV, csv_source

pytestmark = pytest.mark.integration

# Run-specific columns: everything else must be identical when the input is.
RUN_COLUMNS = {"run_id", "ingested_at", "reconciled_at"}

SHOP = "\n".join(
    json.dumps(r)
    for r in [
        {"customer_id": 1, "email": "ada@example.org", "first": "Ada", "last": "Lovelace", "dob": "1985-12-10"},
        {"customer_id": 2, "email": "bad@@example.org", "first": "", "last": "", "dob": "2999-01-01"},
    ]
) + "\n"
SHOP_SOURCE = csv_source(
    name="shop", kind="jsonl", path="shop.jsonl", id_column="customer_id", trust_rank=2, date_formats=["%Y-%m-%d"],
    columns={"email": "email", "first": "first_name", "last": "last_name", "dob": "date_of_birth"},
)
CRM = GOOD_CSV + "4,=HYPERLINK(\"x\"),Evil,e@example.org,,,GB,\n4,Dup,Licate,d@example.org,,,GB,\n5,Rag,Ged\n"


def run_job(config) -> dg.ExecuteInProcessResult:  # type: ignore[no-untyped-def]
    job = build_definitions(config).resolve_job_def(JOB_NAME)
    return job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


def snapshot(warehouse: Warehouse, table: str) -> list[tuple]:  # type: ignore[type-arg]
    frame = warehouse.read(table)
    keep = [c for c in frame.columns if c not in RUN_COLUMNS]
    return sorted(frame.select(keep).rows(), key=repr)


@pytest.fixture
def project(make_project):  # type: ignore[no-untyped-def]
    return make_project(files={"crm.csv": CRM, "shop.jsonl": SHOP}, sources=[csv_source(), SHOP_SOURCE])


def test_job_materialises_every_table_and_reconciles(project) -> None:  # type: ignore[no-untyped-def]
    result = run_job(project)
    assert result.success
    warehouse = open_warehouse(project)
    assert {"raw_crm", "raw_shop", "standardised_customers", "validated_customers",
            "quarantined_records", "run_reconciliation"} <= set(warehouse.tables())
    recon = warehouse.read("run_reconciliation").sort("source_system")
    assert recon.select("source_system", "rows_read", "rows_validated", "rows_quarantined").rows() == [
        ("crm", 6, 3, 3), ("shop", 2, 1, 1),
    ]
    assert recon["balanced"].all() and recon["run_id"].unique().to_list() == [result.run_id]
    quarantined = warehouse.read("quarantined_records")
    assert quarantined["run_id"].unique().to_list() == [result.run_id]
    shop_row = quarantined.filter(pl.col("source_system") == "shop").row(0, named=True)
    assert set(shop_row["rules_broken"]) == {"has_a_name", "date_of_birth.range"}
    assert "email.invalid" in shop_row["warnings"]


def test_asset_metadata_counts_without_personal_data(project) -> None:  # type: ignore[no-untyped-def]
    result = run_job(project)
    metadata = {
        event.asset_key.to_user_string(): event.step_materialization_data.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    assert metadata["quarantined_records"]["dagster/row_count"].value == 4
    assert metadata["raw_crm"]["unparsable_rows"].value == 1
    text = json.dumps({k: {m: str(v.value) for m, v in md.items()} for k, md in metadata.items()})
    for personal in ("Lovelace", "ada@example.org", "HYPERLINK", "1985-12-10"):
        assert personal not in text


def test_second_run_on_same_input_gives_same_tables(project) -> None:  # type: ignore[no-untyped-def]
    warehouse = open_warehouse(project)
    assert run_job(project).success
    first = {t: snapshot(warehouse, t) for t in ("validated_customers", "quarantined_records", "standardised_customers")}
    assert run_job(project).success
    second = {t: snapshot(warehouse, t) for t in first}
    assert first == second
    assert warehouse.read("run_reconciliation")["run_id"].n_unique() == 2


def test_failed_run_leaves_previous_tables_whole(project, make_project) -> None:  # type: ignore[no-untyped-def]
    warehouse = open_warehouse(project)
    assert run_job(project).success
    before = {t: snapshot(warehouse, t) for t in ("raw_crm", "validated_customers", "quarantined_records")}
    # Same project, but the CRM file lost a mapped column: the extract fails.
    broken = make_project(files={"crm.csv": CRM.replace(",Email,", ",Mail,", 1)}, sources=[csv_source(), SHOP_SOURCE])
    result = run_job(broken)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = user_error_message(failure.step_failure_data.error)
    assert message.startswith("cmdm_pipeline.stages.extract.SourceError: source 'crm' (")
    assert "crm.csv): mapped column(s) ['Email'] not found" in message
    assert {t: snapshot(warehouse, t) for t in before} == before


def test_atomic_replace_rolls_back_every_table(tmp_path) -> None:  # type: ignore[no-untyped-def]
    warehouse = Warehouse(tmp_path / "w.duckdb")
    warehouse.replace({"a": pl.DataFrame({"x": [1]}), "b": pl.DataFrame({"y": [1]})})

    class Boom(pl.DataFrame):
        def to_arrow(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        warehouse.replace({"a": pl.DataFrame({"x": [2]}), "b": Boom({"y": [2]})})
    assert warehouse.read("a")["x"].to_list() == [1]
    assert warehouse.read("b")["y"].to_list() == [1]
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM information_schema.tables").fetchall() == [(2,)]
