"""`engine:` and `spark:` in cmdm.yaml, `$CMDM_ENGINE`, and the Spark session's configuration (no JVM started)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from cmdm_pipeline.config import ConfigError, SparkConfig
from cmdm_pipeline.engines import engine_for
from cmdm_pipeline.engines.duckdb import DuckDBEngine
from cmdm_pipeline.engines.spark import SparkEngine, session_conf


@pytest.fixture(autouse=True)
def no_engine_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CMDM_ENGINE", raising=False)


def test_duckdb_is_the_default_engine(make_project) -> None:  # type: ignore[no-untyped-def]
    config = make_project()
    assert config.engine == "duckdb" and config.matching.engine.name == "duckdb"
    assert isinstance(engine_for(config.matching), DuckDBEngine)
    assert engine_for(config.matching).memory_limit == config.matching.memory_limit  # type: ignore[attr-defined]


def test_spark_section_reaches_the_matching_settings(make_project) -> None:  # type: ignore[no-untyped-def]
    config = make_project(engine="spark", spark={"master": "local[3]", "conf": {"spark.driver.memory": "3g"},
                                                 "warehouse": "lake"})
    engine = engine_for(config.matching)
    assert isinstance(engine, SparkEngine)
    assert engine.config.master == "local[3]" and engine.config.conf == {"spark.driver.memory": "3g"}
    # A relative warehouse is read from the config's folder, like every other path in it.
    assert engine.config.warehouse == str(config.base_dir / "lake")


def test_spark_warehouse_defaults_beside_the_warehouse_and_keeps_uris(make_project) -> None:  # type: ignore[no-untyped-def]
    config = make_project(engine="spark")
    assert config.matching.engine.spark.warehouse == str(config.base_dir / "warehouse" / "spark")
    uri = "s3a://bucket/cmdm"
    assert make_project(engine="spark", spark={"warehouse": uri}).matching.engine.spark.warehouse == uri


def test_environment_overrides_the_engine(make_project, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CMDM_ENGINE", "Spark")
    assert make_project().matching.engine.name == "spark"
    monkeypatch.setenv("CMDM_ENGINE", "duckdb")
    assert make_project(engine="spark").engine == "duckdb"


def test_a_bad_engine_in_the_environment_names_the_variable(make_project, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CMDM_ENGINE", "flink")
    with pytest.raises(ConfigError, match=r"CMDM_ENGINE: expected one of duckdb, spark, got 'flink'"):
        make_project()


@pytest.mark.parametrize(("settings", "where", "expected"), [
    ({"engine": "flink"}, "at engine:", "Input should be 'duckdb' or 'spark'"),
    ({"spark": {"master": "localhost"}}, "at spark.master:", "is not a Spark master URL"),
    ({"spark": {"conf": {"driver.memory": "2g"}}}, "at spark.conf:", "start with `spark.`"),
    ({"spark": {"conf": {"spark.jars.packages": "io.delta:delta-spark_2.13:4.0.0"}}}, "at spark.conf:",
     "would download packages"),
    ({"spark": {"master": "spark://head:7077"}}, "at spark:", "set `checkpoint_dir`"),
    ({"spark": {"mastr": "local[2]"}}, "at spark.mastr:", "Extra inputs are not permitted"),
    ({"matching": {"engine": {"name": "spark"}}}, "at (top level)", "top-level `engine`"),
])
def test_bad_engine_settings_name_the_key(make_project, settings: dict[str, Any], where: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as caught:
        make_project(**settings)
    assert where in str(caught.value) and expected in str(caught.value)


def test_a_cluster_master_with_a_checkpoint_location_is_accepted(make_project) -> None:  # type: ignore[no-untyped-def]
    spark = make_project(engine="spark", spark={"master": "yarn", "checkpoint_dir": "hdfs:///tmp/cmdm"}).matching.engine.spark
    assert not spark.is_local and spark.checkpoint_dir == "hdfs:///tmp/cmdm"


def test_the_session_gets_splinks_jar_and_local_defaults_under_the_users_conf() -> None:
    from splink.backends.spark import similarity_jar_location

    conf = session_conf(SparkConfig(master="local[2]", warehouse="/w/spark", conf={
        "spark.jars": "/opt/extra.jar", "spark.sql.shuffle.partitions": 16, "spark.ui.enabled": True}))
    assert conf["spark.jars"] == f"{similarity_jar_location()},/opt/extra.jar"  # Splink's jar is on the machine
    assert conf["spark.sql.shuffle.partitions"] == "16" and conf["spark.ui.enabled"] == "true"  # the user's win
    assert conf["spark.driver.bindAddress"] == "127.0.0.1" and conf["spark.sql.warehouse.dir"] == "/w/spark"
    assert not any(key.startswith("spark.jars.") for key in conf)  # nothing that downloads
    local = session_conf(SparkConfig(master="local[3]"))
    assert local["spark.sql.shuffle.partitions"] == "6"
    machine_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**30
    assert local["spark.driver.memory"] == f"{max(1, machine_gb // 4)}g"  # not Spark's 1g: executors share that heap
    assert session_conf(SparkConfig(conf={"spark.driver.memory": "3g"}))["spark.driver.memory"] == "3g"
    cluster = session_conf(SparkConfig(master="yarn", checkpoint_dir="hdfs:///c"))
    assert "spark.sql.shuffle.partitions" not in cluster and "spark.driver.host" not in cluster  # the cluster's own
    assert "spark.driver.memory" not in cluster
