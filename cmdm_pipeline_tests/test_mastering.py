"""Matching and mastering on generated data large enough to train a model (integration)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from cmdm_pipeline.assets.master import golden_tables
from cmdm_pipeline.assets.match import features
from cmdm_pipeline.config import load_config
from cmdm_pipeline.definitions import JOB_NAME, build_definitions
from cmdm_pipeline.protect.keys.at_rest import open_warehouse, warehouse_keys
from cmdm_pipeline.sample.consent import write_consent_events
from cmdm_pipeline.sample.generator import generate
from cmdm_pipeline.stages.match_model import train_model
from cmdm_pipeline_tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration
EM_SAMPLE = 2000  # pairs per EM rule: fewer than the larger rules block among these records (m moved at most 0.016)
KEY = ["source_system", "source_record_id"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mastering")
    generate(3000, 11, root / "data")
    write_consent_events(root / "data", seed=11, subjects=100)
    document = yaml.safe_load((REPO_ROOT / "cmdm.yaml").read_text(encoding="utf-8"))
    document["warehouse"] = {"path": "warehouse/cmdm.duckdb"}
    document.setdefault("matching", {})["decisions"] = "decisions.csv"
    for source in document["sources"]:
        source["path"] = f"data/{Path(source['path']).name}"
    document["consent"]["source"]["path"] = "data/consent_events.csv"
    document.pop("erasure", None)  # its requests name customers of the bundled sample; erasure has tests of its own
    (root / "cmdm.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return root


def run(root: Path, **tags: str) -> dg.ExecuteInProcessResult:
    job = build_definitions(load_config(root / "cmdm.yaml")).resolve_job_def(JOB_NAME)
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), tags=tags, raise_on_error=True)
    assert result.success
    return result


def test_matching_and_mastering_across_runs(project: Path) -> None:
    store = open_warehouse(load_config(project / "cmdm.yaml"))
    first = run(project)
    model_meta = next(
        e.step_materialization_data.materialization.metadata
        for e in first.get_asset_materialization_events() if e.asset_key.to_user_string() == "match_model"
    )
    assert model_meta["trained_this_run"].value is True
    assert model_meta["match_weights_chart"].value.endswith("/match/charts/match_weights.html")  # served by `cmdm serve`
    charts = Path(model_meta["charts_folder"].value) / "match_weights.html"
    assert charts.is_file() and "<script src=" not in charts.read_text()[:5000]

    validated = store.read("validated_customers")
    xref = store.read("customer_xref")
    # Every validated record has exactly one master.
    assert xref.height == validated.height
    assert xref.select(KEY).is_unique().all()
    golden = store.read("golden_customers")
    assert golden["master_id"].is_unique().all()
    assert set(golden["master_id"]) == set(xref["master_id"])
    assert golden.height < validated.height  # records were actually merged
    assert store.read("match_pairs").height > 0
    lineage = store.read("golden_attribute_lineage")
    assert lineage.join(xref, on=[*KEY, "master_id"], how="anti").height == 0  # winners belong to their master
    # The run's calibration is recorded for the quality report: a threshold and the model's own estimates.
    summary = store.read("match_summary").row(0, named=True)
    assert 0 < summary["link_threshold"] < 1 and 0 < summary["match_prior"] < 0.01
    assert 0.5 < summary["estimated_precision"] <= 1 and 0.5 < summary["estimated_recall"] <= 1
    queue = store.read("match_review_queue")
    assert queue.height == summary["queued"] <= int(0.01 * validated.height)
    report = store.read("quality_report").filter(pl.col("stage") == "matching")
    assert {"link_threshold", "estimated_precision", "estimated_recall", "decided_automatically"} <= set(report["metric"])

    # Same input again: same master ids, the model is reused, history gains no versions.
    history_before = store.read("golden_customers_history").height
    second = run(project)
    meta = {e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
            for e in second.get_asset_materialization_events()}
    assert meta["match_model"]["trained_this_run"].value is False
    assert meta["match_pairs"]["mode"].value == "incremental: 0 new or changed, 0 gone"
    assert store.read("customer_xref").select(*KEY, "master_id").sort(KEY).equals(xref.select(*KEY, "master_id").sort(KEY))
    assert store.read("golden_customers_history").height == history_before
    consent_before = store.read("consent_history").height

    # A steward says two linked records are different: the next run splits them and keeps it so.
    pair = store.read("match_pairs").sort("evidence", descending=True).row(0, named=True)
    with (project / "decisions.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source_system_l", "source_record_id_l", "source_system_r", "source_record_id_r",
                         "decision", "decided_by", "decided_at", "reason"])
        writer.writerow([pair["source_system_l"], pair["source_record_id_l"], pair["source_system_r"],
                         pair["source_record_id_r"], "different", "steward@example.org", "2026-11-22T10:00:00", "checked"])
    run(project)
    after = store.read("customer_xref")

    def master(system: str, record: str) -> str:
        return after.filter((pl.col("source_system") == system) & (pl.col("source_record_id") == record))["master_id"][0]

    assert master(pair["source_system_l"], pair["source_record_id_l"]) != master(pair["source_system_r"], pair["source_record_id_r"])
    # Consent follows the split: every row names a master that exists, and no event was ingested twice.
    assert set(store.read("consent_current")["master_id"]) <= set(after["master_id"])
    assert store.read("consent_history").height == consent_before
    old = xref.filter((pl.col("source_system") == pair["source_system_l"]) & (pl.col("source_record_id") == pair["source_record_id_l"]))["master_id"][0]
    assert old in set(after["master_id"])  # the larger part kept the id
    # A new till record for a known customer: only it is scored, and it joins that customer's master.
    pos_path = project / "data" / "pos_loyalty.csv"
    pos = pl.read_csv(pos_path, infer_schema=False)
    known = store.read("validated_customers").filter(pl.col("source_system") == "pos").sort("source_record_id")
    original = pos.filter(pl.col("CardNo") == known["source_record_id"][0])
    copy = original.with_columns(pl.lit("9" * 16).alias("CardNo"))
    pl.concat([pos, copy]).write_csv(pos_path)
    fourth = run(project)
    mode = next(e.step_materialization_data.materialization.metadata["mode"].value
                for e in fourth.get_asset_materialization_events() if e.asset_key.to_user_string() == "match_pairs")
    assert mode == "incremental: 1 new or changed, 0 gone"
    latest = store.read("customer_xref")
    new_master = latest.filter(pl.col("source_record_id") == "9" * 16)["master_id"][0]
    assert new_master == latest.filter(
        (pl.col("source_system") == "pos") & (pl.col("source_record_id") == known["source_record_id"][0]))["master_id"][0]

    run(project, **{"cmdm/retrain": "true"})
    assert (project / "warehouse" / "models" / "match_model_v2.json").is_file()
    assert json.loads((project / "warehouse" / "models" / "match_model_v2.json").read_text())["cmdm_model_version"] == 2


def test_em_on_a_sample_of_each_rules_pairs_learns_nearly_the_same_m_values(project: Path) -> None:
    config = load_config(project / "cmdm.yaml")
    if not config.warehouse_path.exists():
        run(project)
    frame = features(open_warehouse(config), config)

    def m_values(em_max_pairs: float | None) -> dict[tuple[str, str], float]:
        matching = config.matching.model_copy(update={"em_max_pairs": em_max_pairs})
        model = train_model(frame, config.customer_schema, matching, 1).settings
        return {(c["output_column_name"], level["label_for_charts"]): level["m_probability"]
                for c in model["comparisons"] for level in c["comparison_levels"]
                if c["output_column_name"] in ("first_name", "last_name", "email", "date_of_birth")
                and level.get("m_probability") is not None}

    every, sampled = m_values(None), m_values(EM_SAMPLE)
    assert every.keys() == sampled.keys() and len(every) > 10
    # m is each level's share among true matches; a rare level's log-weight is noisy in any sample.
    differences = {key: abs(every[key] - sampled[key]) for key in every}
    assert max(differences.values()) > 0  # the rules' pairs were sampled, so the estimates moved...
    assert max(differences.values()) < 0.05, differences  # ...by under 5 points of share


def test_golden_records_built_a_part_of_the_masters_at_a_time_are_those_built_whole(project: Path) -> None:
    config = load_config(project / "cmdm.yaml")
    if not config.warehouse_path.exists():
        run(project)
    store = open_warehouse(config)
    keys = warehouse_keys(store, config)
    whole = golden_tables(store, config, keys, part_records=10**9)
    parts = golden_tables(store, config, keys, part_records=400)  # the ~3,000 records in 8 parts
    golden = whole[0]
    # People link to organisation masters built in other parts too.
    assert golden.filter(pl.col("organisation_master_id").is_not_null()).height > 20
    assert parts[0].equals(golden)
    assert parts[1].equals(whole[1])
    assert parts[2].sort(pl.all()).equals(whole[2].sort(pl.all()))
    assert whole[2].height > golden.height
