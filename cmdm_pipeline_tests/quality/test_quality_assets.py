"""The real job, twice on different generated inputs: quality_report, quality_trend, Data Docs and the checks (integration)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
import yaml

from cmdm_pipeline.assets.quality import ACCEPT_DRIFT_TAG
from cmdm_pipeline.config import load_config
from cmdm_pipeline.definitions import JOB_NAME, build_definitions
from cmdm_pipeline.protect.keys.at_rest import open_warehouse
from cmdm_pipeline.quality.expectations import SUITE_NAME
from cmdm_pipeline.quality.measure import (
    BySource,
    QualityInputs,
    golden_columns,
    measure_quality,
    presence_only_columns,
    record_columns,
)
from cmdm_pipeline.sample.generator import generate
from cmdm_pipeline.stages.validate import rule_failures
from cmdm_pipeline.warehouse import Warehouse
from cmdm_pipeline_tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

CANARY = "Qzcanarysurname"
AGREED_COLUMNS = [
    ("run_id", "VARCHAR"), ("run_at", "TIMESTAMP"), ("stage", "VARCHAR"), ("source_system", "VARCHAR"),
    ("attribute", "VARCHAR"), ("metric", "VARCHAR"), ("rule", "VARCHAR"), ("rows_evaluated", "BIGINT"),
    ("rows_failed", "BIGINT"), ("pass_rate", "DOUBLE"), ("value", "DOUBLE"),
]
CHECKS = {"source_rows_reconcile", "sources_did_not_shrink", "quarantine_rate_within_limit", "unique_master_id",
          "personal_data_stored_encrypted", "match_rate_within_drift", "cluster_sizes_within_drift"}


def write_config(root: Path, **quality: float) -> None:
    document = yaml.safe_load((REPO_ROOT / "cmdm.yaml").read_text(encoding="utf-8"))
    document["warehouse"] = {"path": "warehouse/cmdm.duckdb"}
    document.setdefault("matching", {})["decisions"] = None
    for source in document["sources"]:
        source["path"] = f"data/{Path(source['path']).name}"
    # Consent, lenses and erasure have tests of their own (and the workbench's roles name lenses).
    for section in ("consent", "lenses", "erasure", "web"):
        document.pop(section, None)
    document["quality"] = {**document.get("quality", {}), **quality}
    (root / "cmdm.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def run(root: Path, job: str = JOB_NAME, **tags: str) -> dg.ExecuteInProcessResult:
    definitions = build_definitions(load_config(root / "cmdm.yaml"))
    if job != JOB_NAME:
        checks_only = dg.define_asset_job(job, selection=dg.AssetSelection.all_asset_checks(), executor_def=dg.in_process_executor)
        definitions = dg.Definitions.merge(definitions, dg.Definitions(jobs=[checks_only]))
    return definitions.resolve_job_def(job).execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), tags=tags, raise_on_error=False)


def verdicts(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, object]]:
    return {e.asset_key.to_user_string(): {k: v.value for k, v in e.step_materialization_data.materialization.metadata.items()}
            for e in result.get_asset_materialization_events()}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dg.ExecuteInProcessResult, dg.ExecuteInProcessResult]:
    """Two runs: generated sources, then the till (pos) file with a tenth of its rows gone and one row whose
    surname (personal data, carrying a canary) is too long to pass ``last_name.length``."""
    root = tmp_path_factory.mktemp("quality")
    generate(400, 7, root / "data")
    write_config(root)
    first = run(root)
    pos = root / "data" / "pos_loyalty.csv"
    rows = pl.read_csv(pos, infer_schema=False)
    bad = pl.DataFrame({c: [None] for c in rows.columns}, schema={c: pl.String for c in rows.columns}).with_columns(
        CardNo=pl.lit("990000001"), Forename=pl.lit("Qzcanaryforename"), Surname=pl.lit(CANARY * 8),
        Email=pl.lit("qzcanary@example.test"), Country=pl.lit("GB"))
    pl.concat([rows.head(rows.height * 9 // 10), bad]).write_csv(pos)
    second = run(root)
    return root, first, second


def test_both_runs_pass_every_check_and_land_in_quality_report(project) -> None:  # type: ignore[no-untyped-def]
    root, first, second = project
    assert first.success and second.success
    for result in (first, second):
        found = verdicts(result)
        assert set(found) == CHECKS and all(e.passed for e in found.values())
    assert verdicts(first)["match_rate_within_drift"].metadata["previous_run"].value == "none"
    assert verdicts(second)["match_rate_within_drift"].metadata["previous_run"].value == first.run_id
    with duckdb.connect(str(root / "warehouse" / "cmdm.duckdb"), read_only=True) as con:
        columns = con.sql("DESCRIBE quality_report").fetchall()
    assert [(c[0], c[1]) for c in columns] == AGREED_COLUMNS  # the shape `cmdm report` reads
    report = Warehouse(root / "warehouse" / "cmdm.duckdb").read("quality_report")
    assert report.group_by("run_id").len().sort("run_id")["run_id"].to_list() == sorted([first.run_id, second.run_id])
    assert set(report["stage"]) == {"standardised", "validated", "golden", "quarantine", "matching"}
    assert {"rule", "completeness", "duplicate_rate", "golden_count", "quality_score", "quarantine_rate",
            "match_rate", "cluster_size_1", "link_threshold", "estimated_precision", "estimated_recall",
            "queued", "decided_automatically"} <= set(report["metric"])


def test_quality_trend_shows_what_changed_between_the_runs(project) -> None:  # type: ignore[no-untyped-def]
    root, first, second = project
    with duckdb.connect(str(root / "warehouse" / "cmdm.duckdb"), read_only=True) as con:
        trend = con.sql("FROM quality_trend").pl()
    assert trend.filter(pl.col("run_id") == first.run_id)["previous_value"].null_count() == trend.filter(
        pl.col("run_id") == first.run_id).height
    later = trend.filter(pl.col("run_id") == second.run_id)
    assert set(later["previous_run_id"]) == {first.run_id}
    pos = later.filter((pl.col("metric") == "quarantine_rate") & (pl.col("source_system") == "pos")).row(0, named=True)
    assert pos["value"] != pos["previous_value"] and pos["delta"] == pytest.approx(pos["value"] - pos["previous_value"])
    rule = later.filter((pl.col("stage") == "standardised") & (pl.col("rule") == "last_name.length")
                        & pl.col("source_system").is_null()).row(0, named=True)
    assert rule["delta"] < 0  # one row failed the rule in the second run, none in the first


def test_gx_counts_agree_with_the_pandera_gate(project) -> None:  # type: ignore[no-untyped-def]
    root, _, second = project
    config = load_config(root / "cmdm.yaml")
    store = open_warehouse(config)
    report = store.read("quality_report").filter((pl.col("run_id") == second.run_id) & (pl.col("metric") == "rule")
                                                 & pl.col("source_system").is_null())
    today = report["run_at"][0].date()
    for stage, table in (("validated", "validated_customers"), ("standardised", "standardised_customers")):
        frame = store.read(table)
        if stage == "validated":  # validated rows lack the standardised-only columns the gate requires
            frame = frame.with_columns(source_values=pl.lit(None, pl.String),
                                       issues=pl.lit(None, store.read("standardised_customers").schema["issues"]))
        gate = dict(rule_failures(frame, config.customer_schema, today).group_by("rule").len().iter_rows())
        suite = dict(report.filter(pl.col("stage") == stage).select("rule", "rows_failed").iter_rows())
        assert suite == {rule: gate.get(rule, 0) for rule in suite}, stage
        assert sum(suite.values()) > 0  # warn rules fail on validated rows too: the comparison is not 0 == 0
    assert len(suite) == len(config.customer_schema.rules) + sum(len(a.rules) for a in config.customer_schema.attributes.values())


def test_data_docs_linked_from_metadata_open_and_hold_no_personal_data(project) -> None:  # type: ignore[no-untyped-def]
    root, _, second = project
    found = metadata(second)
    assert str(found["quality_report"]["data_docs"]) == "http://127.0.0.1:8000/quality/data-docs/index.html"  # `cmdm serve`
    index = Path(str(found["quality_report"]["data_docs_folder"]).removeprefix("file://")) / "index.html"
    html = index.read_text(encoding="utf-8")
    assert index.name == "index.html" and html.lstrip().lower().startswith("<!doctype html") and SUITE_NAME in html
    pages = [p.read_text(encoding="utf-8", errors="replace") for p in index.parent.rglob("*.html")]
    assert len(pages) > 2 and not any("qzcanary" in page.lower() for page in pages)
    assert "qzcanary" not in json.dumps(found, default=str).lower()
    checks = {k: {m: str(v.value) for m, v in e.metadata.items()} for k, e in verdicts(second).items()}
    assert "qzcanary" not in json.dumps(checks).lower()
    assert found["quality_report"]["top_failures"]["standardised"]["last_name.length"] == 1


def test_checks_fail_on_broken_tables_and_strict_limits(project, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root, _, _ = project
    copy = tmp_path / "broken"
    shutil.copytree(root, copy)
    write_config(copy, max_quarantine_rate=0.0)
    with duckdb.connect(str(copy / "warehouse" / "cmdm.duckdb")) as con:
        con.execute("DELETE FROM validated_customers WHERE rowid = (SELECT min(rowid) FROM validated_customers)")
        con.execute("INSERT INTO golden_customers SELECT * FROM golden_customers LIMIT 1")
        con.execute("UPDATE customer_clusters SET cluster = 0")  # every record merged into one customer
        # A personal column no longer recorded as ciphertext (as if written around the protection).
        con.execute("DELETE FROM cmdm_encrypted_columns WHERE table_name = 'golden_customers' AND column_name = 'email'")
    failed = verdicts(run(copy, "checks_only"))
    # Every check fails but the shrink guard: the sources are as large as at the last good run.
    assert {name for name, e in failed.items() if not e.passed} == CHECKS - {"sources_did_not_shrink"}
    assert failed["source_rows_reconcile"].description.endswith("validated + quarantined for: crm")
    accepted = verdicts(run(copy, "checks_only", **{ACCEPT_DRIFT_TAG: "true"}))
    assert accepted["match_rate_within_drift"].passed and accepted["cluster_sizes_within_drift"].passed
    assert accepted["match_rate_within_drift"].metadata["accepted_by_tag"].value is True
    assert accepted["cluster_sizes_within_drift"].metadata["cluster_size_shares"].value["cluster_size_10_plus"] == 1.0


def test_a_failing_blocking_check_stops_publication(project, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root, first, second = project
    copy = tmp_path / "strict"
    shutil.copytree(root, copy)
    write_config(copy, quarantine_rate_by_source={"pos": 0.0})
    result = run(copy)
    assert not result.success
    assert not verdicts(result)["quarantine_rate_within_limit"].passed
    written = set(metadata(result))
    assert "validated_customers" in written and not written & {"customer_clusters", "golden_customers", "quality_report"}
    report = Warehouse(copy / "warehouse" / "cmdm.duckdb").read("quality_report")
    assert set(report["run_id"]) == {first.run_id, second.run_id}


def test_run_at_is_utc_now(project) -> None:  # type: ignore[no-untyped-def]
    root, _, second = project
    at = Warehouse(root / "warehouse" / "cmdm.duckdb").read("quality_report").filter(
        pl.col("run_id") == second.run_id)["run_at"].unique()
    assert at.len() == 1 and abs(dt.datetime.now(dt.UTC).replace(tzinfo=None) - at[0]) < dt.timedelta(minutes=10)


def test_every_asset_reports_counts_in_its_metadata(project) -> None:  # type: ignore[no-untyped-def]
    _, _, second = project
    found = metadata(second)
    assert all("dagster/row_count" in found[name] for name in found if name != "match_model")
    assert found["quarantined_records"]["quarantine_rate_by_source"]["pos"] > 0
    assert set(found["standardised_customers"]["rows_by_source"]) == {"crm", "erp", "shop", "pos", "survey"}
    assert found["customer_xref"]["records_per_master"] > 1
    assert found["golden_quality_scores"]["mean_quality_score"] == pytest.approx(found["quality_report"]["mean_quality_score"], abs=1e-4)


def test_attributes_no_rule_reads_stay_encrypted_and_the_report_is_the_same(project, caplog) -> None:  # type: ignore[no-untyped-def]
    root, _, _ = project
    config = load_config(root / "cmdm.yaml")
    store = open_warehouse(config)
    unread = presence_only_columns(config)
    # Named only by `IS NOT NULL` (identifiable, reachable) or by no rule; a length rule reads last_name.
    assert {"email", "phone", "postcode", "address_line_1", "nps_comment"} <= set(unread)
    assert not {"first_name", "last_name", "date_of_birth", "country"} & set(unread)

    def inputs(presence_only: list[str]) -> QualityInputs:
        def read(table: str, columns: list[str]) -> pl.DataFrame:
            return store.read(table, columns, presence_only=presence_only)

        return QualityInputs(
            standardised=BySource.of(read("standardised_customers", record_columns(config))),
            validated=BySource.of(read("validated_customers", record_columns(config))),
            quarantined=read("quarantined_records", ["source_system", "rules_broken"]),
            clusters=read("customer_clusters", ["source_system", "cluster"]),
            xref=read("customer_xref", ["source_system", "master_id"]),
            golden=read("golden_customers", golden_columns(config)),
        )

    lean_inputs = inputs(unread)
    assert lean_inputs.validated.read("crm").schema["email"] == pl.Boolean and lean_inputs.golden.schema["phone"] == pl.Boolean
    at = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    with caplog.at_level(logging.INFO, logger="dagster.builtin.cmdm.progress"):
        lean = measure_quality(lean_inputs, config, "r", at)
    full = measure_quality(inputs([]), config, "r", at)
    assert lean.report.equals(full.report) and lean.scores.equals(full.scores)
    # Progress: a batch per source of each record stage, then the golden records.
    batches = len(lean_inputs.standardised.sources) + len(lean_inputs.validated.sources) + 1
    assert batches == 11 and f"quality: the rules' suite over each stage and source: {batches}/{batches} done in" in caplog.text
