"""The real job on the bundled sample with ``engine: spark`` (local[2]) beside the DuckDB engine (integration).

One Spark session for the module (the JVM takes 10-25 s to start), stopped at its end. The Spark run trains
its own model; a DuckDB run given that model file must produce the very same tables (the model file is
interchangeable, and scoring is the same SQL on both engines); a model trained on DuckDB from the same
records must cluster them as the Spark-trained one does (pair F1 >= 0.999: the engines sample u differently),
and score the same on Spark as on DuckDB.

"The same" allows one known difference: Splink's Spark jar computes Jaro(-Winkler) with half the
transpositions unrounded, DuckDB rounds them down ('swanson'/'swason': 0.908 on Spark, 0.928 on DuckDB), so a
pair near a threshold (0.92, 0.9, 0.8) can fall one level lower on Spark: 6 of the sample's 12,111 pairs.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
import yaml

from cmdm_pipeline.assets.match import features
from cmdm_pipeline.config import ProjectConfig, SparkConfig, load_config
from cmdm_pipeline.definitions import JOB_NAME, build_definitions
from cmdm_pipeline.engines.spark import spark_session, stop_spark
from cmdm_pipeline.protect.keys.at_rest import open_warehouse
from cmdm_pipeline.schema import Kind
from cmdm_pipeline.stages.decisions import DECISION_COLUMNS
from cmdm_pipeline.stages.match import match_records
from cmdm_pipeline.stages.match_model import latest_model, score_pairs, train_model
from cmdm_pipeline_tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

KEY = ["source_system", "source_record_id"]
#: Share of scored pairs whose comparison levels may differ between the engines (Jaro-Winkler, above).
JARO_DIFFERENCES = 0.001


@dataclass
class Run:
    config: ProjectConfig
    result: dg.ExecuteInProcessResult
    seconds: dict[str, float]  # per step


def project(root: Path, engine: str | None) -> ProjectConfig:
    """The shipped cmdm.yaml and sample, in ``root``, on ``engine`` (None: the default)."""
    shutil.copytree(REPO_ROOT / "data" / "sample", root / "data" / "sample")
    document = yaml.safe_load((REPO_ROOT / "cmdm.yaml").read_text(encoding="utf-8"))
    document["warehouse"] = {"path": "warehouse/cmdm.duckdb"}
    document.setdefault("matching", {})["decisions"] = None
    if engine is not None:
        document["engine"] = engine
    (root / "cmdm.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return load_config(root / "cmdm.yaml")


def run(config: ProjectConfig) -> Run:
    instance = dg.DagsterInstance.ephemeral()
    result = build_definitions(config).resolve_job_def(JOB_NAME).execute_in_process(instance=instance, raise_on_error=False)
    started: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for entry in instance.all_logs(result.run_id):
        event = entry.dagster_event
        if event is not None and event.step_key and event.event_type_value == "STEP_START":
            started[event.step_key] = entry.timestamp
        elif event is not None and event.step_key and event.event_type_value == "STEP_SUCCESS":
            seconds[event.step_key] = entry.timestamp - started[event.step_key]
    return Run(config, result, seconds)


def pair_f1(a: pl.DataFrame, b: pl.DataFrame) -> float:
    """Pair F1 of two clusterings (KEY, cluster) of the same records."""
    joined = a.select(*KEY, "cluster").join(b.select(*KEY, pl.col("cluster").alias("other")), on=KEY)
    assert joined.height == a.height == b.height
    pairs = lambda keys: int(joined.group_by(keys).len().select(pl.col("len") * (pl.col("len") - 1) // 2).sum().item())  # noqa: E731
    return 2 * pairs(["cluster", "other"]) / (pairs(["cluster"]) + pairs(["other"]))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The Spark run (training its model), then a DuckDB run given the Spark run's model file."""
    with pytest.MonkeyPatch.context() as env:
        env.delenv("CMDM_ENGINE", raising=False)
        spark_config = project(tmp_path_factory.mktemp("spark"), "spark")
        started = time.perf_counter()
        spark_session(spark_config.matching.engine.spark)
        session_seconds = time.perf_counter() - started
        try:
            on_spark = run(spark_config)
            assert on_spark.result.success
            duckdb_config = project(tmp_path_factory.mktemp("duckdb"), None)
            trained = latest_model(spark_config.warehouse_path)
            assert trained is not None
            models = duckdb_config.warehouse_path.parent / "models"
            models.mkdir(parents=True)
            shutil.copy(trained, models / trained.name)
            on_duckdb = run(duckdb_config)
            # Shown with -s (or on a failure): what the engines cost, for the benchmarks page.
            print(f"\nspark session start {session_seconds:.1f} s; " + "; ".join(
                f"{r.config.engine}: " + ", ".join(f"{step} {r.seconds[step]:.1f} s" for step in ("match_model", "match_records"))
                + f", whole job {sum(r.seconds.values()):.1f} s (steps)" for r in (on_spark, on_duckdb)))
            yield {"spark": on_spark, "duckdb": on_duckdb}
        finally:
            stop_spark()  # and its JVM, which would hold its heap for the rest of the test session


def test_the_spark_run_trains_a_model_that_scores_the_same_on_duckdb(runs) -> None:  # type: ignore[no-untyped-def]
    on_spark, on_duckdb = runs["spark"], runs["duckdb"]
    assert on_duckdb.result.success
    model_metadata = {r.config.engine: e.step_materialization_data.materialization.metadata
                      for r in (on_spark, on_duckdb) for e in r.result.get_asset_materialization_events()
                      if e.asset_key.to_user_string() == "match_model"}
    assert model_metadata["spark"]["trained_this_run"].value is True
    assert model_metadata["duckdb"]["trained_this_run"].value is False  # DuckDB reused Spark's model file
    path = latest_model(on_spark.config.warehouse_path)
    assert path is not None
    model = json.loads(path.read_text())
    assert model["sql_dialect"] == "duckdb" and model["cmdm_model_version"] == 1
    conditions = [level["sql_condition"] for c in model["comparisons"] for level in c["comparison_levels"]]
    assert any("jaro_winkler_similarity" in c for c in conditions) and not any("`" in c for c in conditions)


def test_both_engines_write_the_same_tables_and_clusters(runs) -> None:  # type: ignore[no-untyped-def]
    spark, duckdb = open_warehouse(runs["spark"].config), open_warehouse(runs["duckdb"].config)
    tables = set(spark.tables())
    assert tables == set(duckdb.tables()) and {"match_pairs", "customer_clusters", "golden_customers"} <= tables
    counts = {t: (spark.read(t).height, duckdb.read(t).height) for t in sorted(tables)}
    assert {t: c for t, c in counts.items() if c[0] != c[1]} == {}
    clusters = spark.read("customer_clusters"), duckdb.read("customer_clusters")
    assert pair_f1(*clusters) >= 0.999
    # Same input order, same clusters: the same master ids.
    xref = [w.read("customer_xref").select(*KEY, "master_id").sort(KEY) for w in (spark, duckdb)]
    assert xref[0].equals(xref[1])
    pair_key = ["source_system_l", "source_record_id_l", "source_system_r", "source_record_id_r"]
    pairs = spark.read("match_pairs").join(duckdb.read("match_pairs"), on=pair_key, suffix="_duckdb")
    assert pairs.height == counts["match_pairs"][0] and (pairs["blocked"] == pairs["blocked_duckdb"]).all()
    same_levels(pairs, "comparison_levels", "comparison_levels_duckdb")


def same_levels(pairs: pl.DataFrame, levels: str, other: str) -> None:
    """Comparison levels equal but for a few Jaro-Winkler borderline pairs; equal levels, equal evidence."""
    equal = pairs.filter(pl.col(levels) == pl.col(other))
    assert pairs.height - equal.height <= JARO_DIFFERENCES * pairs.height
    evidence = [c for c in pairs.columns if c.startswith("evidence")]
    assert equal.select((pl.col(evidence[0]) - pl.col(evidence[1])).abs().max()).item() < 1e-9


def test_a_model_trained_on_duckdb_clusters_as_the_spark_trained_one(runs) -> None:  # type: ignore[no-untyped-def]
    config = runs["duckdb"].config
    frame = features(open_warehouse(config), config)
    model = train_model(frame, config.customer_schema, config.matching, version=1).settings
    several = config.customer_schema.of_kind(Kind.email)  # as the job clusters
    clusters = match_records(frame, model, config.matching, pl.DataFrame(schema=DECISION_COLUMNS), several=several).clusters
    on_duckdb = clusters.join(frame.select("unique_id", *KEY), on="unique_id")
    on_spark = open_warehouse(runs["spark"].config).read("customer_clusters")
    assert pair_f1(on_duckdb, on_spark) >= 0.999
    # ... and that model scores the same on Spark: the DuckDB SQL translated, the same pairs and weights.
    spark_matching = runs["spark"].config.matching
    ids = ["unique_id_l", "unique_id_r"]
    here, there = score_pairs(frame, model, config.matching), score_pairs(frame, model, spark_matching)
    assert here.schema == there.schema
    gammas = [c for c in here.columns if c.startswith("gamma_")]
    both = here.with_columns(pl.struct(gammas).alias("levels")).join(
        there.with_columns(pl.struct(gammas).alias("levels")), on=ids, suffix="_spark")
    # A pair one level lower may fall under the kept weight on one engine only.
    assert max(here.height, there.height) - both.height <= JARO_DIFFERENCES * here.height
    same_levels(both, "levels", "levels_spark")


def test_blocking_bounded_by_the_pair_budget_scores_the_same_pairs_on_spark(runs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The flags and the rules' extra conditions reach Spark translated: the same blocks are left out, and
    the pairs scored in chunks there are those scored at once on DuckDB."""
    from cmdm_pipeline.stages import match_blocking, match_model
    from cmdm_pipeline.stages.match_model import bounded_scoring

    monkeypatch.setattr(match_blocking, "MIN_PAIR_BUDGET", 0)
    config = runs["duckdb"].config
    frame = features(open_warehouse(config), config)
    path = latest_model(config.warehouse_path)
    assert path is not None
    model = json.loads(path.read_text())
    budget = config.matching.model_copy(update={"max_pairs_per_record": 1})
    bounded, bounded_model, left_out = bounded_scoring(frame, model, budget)
    assert left_out["pairs_left_out"] > 0
    ids = ["unique_id_l", "unique_id_r"]
    here = score_pairs(bounded, bounded_model, config.matching).select(ids).sort(ids)
    # ... in 2 x 2 chunks of records on Spark (Splink's predict_chunk).
    monkeypatch.setattr(match_model, "CHUNK_PAIRS", left_out["pairs_blocked"] // 3)
    there = score_pairs(bounded, bounded_model, runs["spark"].config.matching,
                        pairs=left_out["pairs_blocked"]).select(ids).sort(ids)
    assert here.height < score_pairs(frame, model, config.matching).height
    assert abs(here.height - there.height) <= JARO_DIFFERENCES * here.height
    assert here.join(there, on=ids).height >= (1 - JARO_DIFFERENCES) * here.height


def test_stopping_spark_ends_its_jvm_and_a_later_session_starts_a_new_one(capfd: pytest.CaptureFixture[str]) -> None:
    from pyspark import SparkContext

    config = SparkConfig()
    assert spark_session(config).range(3).count() == 3
    assert SparkContext._gateway is not None
    jvm = SparkContext._gateway.proc
    stop_spark()
    assert jvm.poll() is not None and SparkContext._gateway is None
    capfd.readouterr()
    assert spark_session(config).range(4).count() == 4
    stop_spark()
    # The JVM writes to this process's standard error: a start prints no shell banner.
    assert "Setting default log level" not in capfd.readouterr().err
