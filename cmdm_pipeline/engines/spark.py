"""The Spark engine: Splink's Spark backend (``SparkAPI``) on the session ``spark:`` in cmdm.yaml describes.

The session is built once per process (the JVM takes seconds to start) with Splink's similarity jar, which
Splink ships: nothing is downloaded. Each workspace is a new session on it (``newSession()``: its own temp
views, SQL settings and registered functions, one SparkContext), whose intermediate tables Splink writes as
Parquet into a private scratch folder (a local master) or under ``spark.checkpoint_dir`` (a cluster), removed
on the way out.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from cmdm_pipeline.config import SparkConfig
from cmdm_pipeline.engines.spark_sql import model_dialect_settings, spark_settings, to_spark
from cmdm_pipeline.faults import crash_point
from cmdm_pipeline.scratch import private_scratch

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from splink.backends.spark import SparkAPI
    from splink.internals.splink_dataframe import SplinkDataFrame

#: Spark's log4j settings: errors only (the defaults print a dozen WARN lines per start, e.g. on a
#: loopback host name or a missing native Hadoop library).
LOG4J_PROPERTIES = Path(__file__).with_name("spark_log4j2.properties")
#: Splink's SQL compares dates through epoch seconds; DuckDB's are UTC.
SESSION_SQL_CONF = {"spark.sql.session.timeZone": "UTC"}

_session_lock = threading.Lock()
#: Splink's checkpoint folder is the SparkContext's: one workspace at a time in a process.
_workspace_lock = threading.Lock()


def session_conf(config: SparkConfig) -> dict[str, str]:
    """The session's configuration: defaults for this pipeline, then cmdm.yaml's ``spark.conf`` over them.

    Splink's jar is always on ``spark.jars`` (before any the user names)."""
    from splink.backends.spark import similarity_jar_location

    conf = {
        "spark.app.name": "cmdm_pipeline",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={LOG4J_PROPERTIES.as_uri()}",
    }
    # The config loader sets it (default: beside the warehouse). Unset, Spark would create ./spark-warehouse in
    # the working directory when the session starts.
    conf["spark.sql.warehouse.dir"] = config.warehouse or str(Path(tempfile.gettempdir()) / "cmdm-spark-warehouse")
    if config.is_local:
        cores = config.master.removeprefix("local").strip("[]").split(",")[0]
        count = (os.cpu_count() or 1) if cores == "*" else int(cores or 1)  # "local": one thread
        conf |= {
            # Spark's default of 200 shuffle partitions suits a cluster; on a few local cores each costs
            # more to schedule than it holds. Splink repartitions its larger tables to half of this.
            "spark.sql.shuffle.partitions": str(max(2, 2 * count)),
            # Nothing to show on a web UI for a batch step, and no port to bind; the driver talks to itself.
            "spark.ui.enabled": "false",
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            # The executors are threads of the driver's JVM, whose heap Spark caps at 1g by default: training on
            # 100k records ran out of it. A quarter of the machine's memory is the JVM's own default.
            "spark.driver.memory": f"{max(1, _physical_memory_gb() // 4)}g",
        }
    conf |= {key: _text(value) for key, value in config.conf.items()}
    jars = [similarity_jar_location(), *[j for j in conf.get("spark.jars", "").split(",") if j.strip()]]
    conf["spark.jars"] = ",".join(jars)
    return conf


def _physical_memory_gb() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**30
    except (ValueError, OSError, AttributeError):  # no such figure on this platform: Spark's own default
        return 4


def _text(value: str | int | float | bool) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def spark_session(config: SparkConfig) -> SparkSession:
    """The process's Spark session, built on first use (later calls get the same one, whatever their config:
    Spark fixes its master and jars when the JVM starts)."""
    from pyspark.sql import SparkSession

    with _session_lock:
        builder = SparkSession.builder.master(config.master)
        for key, value in session_conf(config).items():
            builder = builder.config(key, value)
        session = builder.getOrCreate()
        session.sparkContext.setLogLevel("ERROR")
        return session


def stop_spark() -> None:
    """End the process's Spark session and its JVM, which ``SparkSession.stop()`` leaves running (py4j's
    gateway holds the heap until the process exits); a later :func:`spark_session` starts a new one."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    with _session_lock:
        session = SparkSession.getActiveSession() or SparkSession._instantiatedSession
        if session is not None:
            session.stop()
        gateway = SparkContext._gateway
        if gateway is None:
            return
        gateway.shutdown()
        process = getattr(gateway, "proc", None)  # PySpark's own launch: the JVM ends when its stdin does
        if process is not None and process.stdin is not None:
            process.stdin.close()
            process.wait(timeout=60)
        SparkContext._gateway = None
        SparkContext._jvm = None


class SparkEngine:
    """Splink's Spark backend; the model's DuckDB SQL is translated when used, and trained models saved in it."""

    name = "spark"
    # Splink counts u per comparison in up to 11 queries (a probe, then 10 chunks of the same sample, stopping
    # early once every level has 100 counts). A Spark query costs about a second whatever its size: one pass
    # over the sample took the bundled sample's training from 226 s to 112 s on local[2], with the same
    # clusters (a rare level never stops early, so most comparisons count the whole sample either way).
    # Spark aggregates the pairs as they stream: there is no chunk to bound memory.
    u_chunks = 1

    def __init__(self, config: SparkConfig) -> None:
        self.config = config

    @contextmanager
    def workspace(self) -> Iterator[SparkAPI]:
        from splink.backends.spark import SparkAPI

        with _workspace_lock, self._checkpoints() as checkpoints:
            session = spark_session(self.config).newSession()
            for key, value in SESSION_SQL_CONF.items():
                session.conf.set(key, value)
            session.sparkContext.setCheckpointDir(checkpoints)
            try:
                yield SparkAPI(spark_session=session, break_lineage_method="parquet")
                crash_point("matching.scratch_written")  # Splink's tables (the records, the pairs) are in the folder
            finally:
                # Temp views belong to this session; dropped so nothing reads the folder being removed. A failure
                # here (a JVM already gone) must not hide the error that ended the work.
                with contextlib.suppress(Exception):
                    for table in session.catalog.listTables():
                        if table.isTemporary:
                            session.catalog.dropTempView(table.name)
                    session.catalog.clearCache()

    @contextmanager
    def _checkpoints(self) -> Iterator[str]:
        if self.config.checkpoint_dir is None:
            with private_scratch("splink-spark") as folder:
                yield str(folder / "checkpoints")
            return
        location = f"{self.config.checkpoint_dir.rstrip('/')}/cmdm-splink-{uuid.uuid4().hex}"
        try:
            yield location
        finally:
            _delete(spark_session(self.config), location)

    def settings(self, settings: dict[str, Any], list_columns: Collection[str]) -> dict[str, Any]:
        return spark_settings(settings, list_columns)

    def rule(self, sql: str, list_columns: Collection[str]) -> str:
        return to_spark(sql, list_columns)

    def select(self, table: SplinkDataFrame, expressions: list[str]) -> pl.DataFrame:
        frame = table.as_spark_dataframe().selectExpr(*expressions)
        result = pl.from_arrow(frame.toArrow())
        assert isinstance(result, pl.DataFrame)
        return result

    def trained(self, trained: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
        return model_dialect_settings(trained, settings)


def _delete(session: SparkSession, location: str) -> None:
    """Remove a folder on any Hadoop-compatible file system (what Spark itself writes through)."""
    jvm = session.sparkContext._jvm
    assert jvm is not None
    path = jvm.org.apache.hadoop.fs.Path(location)
    with contextlib.suppress(Exception):  # a folder Splink never created, or a store that is gone: nothing to keep
        path.getFileSystem(session.sparkContext._jsc.hadoopConfiguration()).delete(path, True)
