"""Accuracy and speed benchmark: the pipeline against bare Splink, on data with known truth.

    python -m cmdm_pipeline.benchmark --records 100000 --seed 7
    python -m cmdm_pipeline.benchmark --config my/cmdm.yaml --truth my/truth.csv

Generates N source rows (or reads the sources of your own config, with a truth file naming the
customer of each labelled record), runs the whole job in a temporary folder, and prints pairwise
precision/recall/F1 and B-cubed of the final clusters against the truth, the largest cluster,
time per step and peak memory. Then runs bare Splink on the same records, with the same
comparisons, blocking and trained model, clustered by connected components at a sweep of
probability thresholds, and prints its best result — the best a Splink user could get by hand,
with the truth to tune against. The "shared-value ceiling" line is what a matcher that links only
records sharing a value (an e-mail or its local part, phone, birth date, postcode, id, street line)
would score at best: the recall the data allows without linking on names alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import polars as pl
import yaml

from cmdm_pipeline.config import ProjectConfig, load_config
from cmdm_pipeline.schema import CustomerSchema, Kind
from cmdm_pipeline.stages.cluster import components

REPO_ROOT = Path(__file__).resolve().parent.parent
THRESHOLDS = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 0.9999)


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
    return {
        "pair_precision": precision,
        "pair_recall": recall,
        "pair_f1": 2 * precision * recall / max(precision + recall, 1e-12),
        "b3_precision": b_precision,
        "b3_recall": b_recall,
        "b3_f1": 2 * b_precision * b_recall / max(b_precision + b_recall, 1e-12),
        "largest_cluster": int(predicted["c"].max() or 0),
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
    """Resident memory of this process four times a second (Linux /proc), to attribute the
    peak to a step; elsewhere it records nothing and only the overall peak is printed."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        statm = Path("/proc/self/statm")
        if not statm.exists():
            return
        page = resource.getpagesize()
        while not self._stop.is_set():
            self.samples.append((time.time(), int(statm.read_text().split()[1]) * page))
            self._stop.wait(0.25)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak_between(self, start: float, end: float) -> int:
        return max((rss for at, rss in self.samples if start <= at <= end), default=0)


def run_pipeline(config: ProjectConfig) -> tuple[dict[str, float], str, dict[str, float]]:
    """Run the job in-process; seconds per step, the run id and peak GB per step."""
    import dagster as dg

    from cmdm_pipeline.definitions import JOB_NAME, build_definitions

    job = build_definitions(config).resolve_job_def(JOB_NAME)
    instance = dg.DagsterInstance.ephemeral(settings={"telemetry": {"enabled": False}})
    with RssSampler() as sampler:
        result = job.execute_in_process(
            instance=instance,
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            raise_on_error=True,
        )
    seconds = {
        str(event.step_key): event.event_specific_data.duration_ms / 1000  # type: ignore[union-attr]
        for event in result.all_events
        if event.event_type_value == "STEP_SUCCESS"
    }
    steps = [entry for entry in instance.all_logs(result.run_id) if entry.is_dagster_event]
    started = {e.step_key: e.timestamp for e in steps if e.dagster_event.event_type_value == "STEP_START"}
    peaks = {
        str(e.step_key): sampler.peak_between(started[e.step_key], e.timestamp) / 1e9
        for e in steps
        if e.dagster_event.event_type_value == "STEP_SUCCESS" and e.step_key in started
    }
    return seconds, result.run_id, peaks


def bare_splink(config: ProjectConfig, model_path: Path, truth: pl.DataFrame) -> list[dict[str, float]]:
    """Same records, comparisons, blocking and model; connected components per threshold."""
    import logging

    from splink import DuckDBAPI, Linker

    from cmdm_pipeline.stages.match_features import KEY, matching_frame
    from cmdm_pipeline.resources import open_warehouse

    store = open_warehouse(config)
    schema = config.customer_schema
    features = matching_frame(store.read("validated_customers").sort(KEY), schema)
    model = {k: v for k, v in json.loads(model_path.read_text()).items() if not k.startswith("cmdm_")}
    db_api = DuckDBAPI()
    linker = Linker(db_api.register(features.to_arrow(), table_name="bare_records"), model, log_level=logging.WARNING)
    predictions = linker.inference.predict(threshold_match_probability=min(THRESHOLDS))
    ids = features.select("unique_id", *KEY)
    results = []
    for threshold in THRESHOLDS:
        clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
            predictions, threshold_match_probability=threshold
        )
        frame = pl.from_arrow(clusters.as_pyarrow_table())
        assert isinstance(frame, pl.DataFrame)
        assigned = frame.select(pl.col("unique_id").cast(pl.Int64), "cluster_id").join(ids, on="unique_id")
        results.append({"threshold": threshold, **score_clusters(assigned, truth, "cluster_id")})
    return results


def generated_config(records: int, seed: int, workdir: Path, encrypt: bool = True) -> ProjectConfig:
    """The shipped cmdm.yaml on ``records`` generated source rows (truth in data/truth), written to ``workdir``."""
    from cmdm_pipeline.sample import generate

    data = workdir / "data"
    generate(records, seed, data)
    document = yaml.safe_load((REPO_ROOT / "cmdm.yaml").read_text(encoding="utf-8"))
    document["warehouse"] = {"path": str(workdir / "warehouse" / "cmdm.duckdb")}
    if not encrypt:
        document.setdefault("protection", {})["encrypt"] = False
    # The bundled erasure requests name customers of the bundled sample, not of generated data.
    document.pop("erasure", None)
    for source in document["sources"]:
        source["path"] = str(data / Path(source["path"]).name)
    if document.get("consent"):
        from cmdm_pipeline.sample_consent import write_consent_events

        write_consent_events(data, seed=seed)
        document["consent"]["source"]["path"] = str(data / "consent_events.csv")
    config_path = workdir / "cmdm.yaml"
    config_path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return load_config(config_path)


def own_config(path: Path, workdir: Path) -> ProjectConfig:
    """Your config, writing only into ``workdir``: its warehouse, keys and lenses; no PostgreSQL lenses."""
    config = load_config(path)
    protection = config.protection.model_copy(update={"key_file": None, "keystore": None})
    return config.model_copy(update={
        "warehouse": config.warehouse.model_copy(update={"path": workdir / "warehouse" / "cmdm.duckdb"}),
        "protection": protection, "lenses_target": None,
    })


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cmdm_pipeline.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000, help="source rows to generate (default 10000)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    parser.add_argument("--config", type=Path, default=None,
                        help="benchmark your own sources instead: this config's job, into a temporary warehouse")
    parser.add_argument("--truth", type=Path, default=None,
                        help="with --config: CSV of source_system, source_record_id, entity (same entity = same customer)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep data and warehouse here (default: a temp folder)")
    parser.add_argument("--no-splink", action="store_true", help="skip the bare-Splink comparison")
    parser.add_argument("--no-encrypt", action="store_true",
                        help="store plaintext (protection.encrypt: false), to measure what encryption costs")
    args = parser.parse_args(argv)
    if (args.config is None) != (args.truth is None):
        parser.error("--config and --truth go together")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cmdm-bench-"))
    started = time.perf_counter()
    if args.config:
        truth_labels = read_truth(args.truth)
        config = own_config(args.config, workdir)
        title = f"{args.config} with truth {args.truth}"
    else:
        config = generated_config(args.records, args.seed, workdir, encrypt=not args.no_encrypt)
        title = f"{args.records:,} source rows, seed {args.seed}"
    generated = time.perf_counter() - started
    if args.config and args.no_encrypt:
        config = config.model_copy(update={"protection": config.protection.model_copy(update={"encrypt": False})})
    started = time.perf_counter()
    seconds, _, peaks = run_pipeline(config)
    total = time.perf_counter() - started
    from cmdm_pipeline.resources import open_warehouse

    store = open_warehouse(config)
    validated = store.read("validated_customers", columns=["source_system", "source_record_id", "party_type"])
    if args.config:
        truth = truth_labels.join(validated.select("source_system", "source_record_id"),
                                  on=["source_system", "source_record_id"])
    else:
        truth = truth_entities(workdir / "data" / "truth" / "ground_truth.csv", validated)
    ours = score_clusters(store.read("customer_xref"), truth, "master_id")
    review = store.query("SELECT review_type, count(*) AS n FROM match_review_queue GROUP BY 1 ORDER BY 1")
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024

    print(f"\ncmdm_pipeline benchmark: {title}, workdir {workdir}")
    print(f"labelled records validated: {truth.height:,}")
    print(f"prepare {generated:.1f}s; pipeline {total:.1f}s; peak RSS {peak_gb:.2f} GB; validated {validated.height:,}")
    print("seconds per step: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])))
    if any(peaks.values()):
        top = sorted(peaks.items(), key=lambda kv: -kv[1])[:6]
        print("peak RSS GB by step: " + ", ".join(f"{k} {v:.2f}" for k, v in top))
    print("review queue: " + (", ".join(f"{t} {n:,}" for t, n in review.iter_rows()) or "empty"))
    header = f"{'':<24}{'pair P':>8}{'pair R':>8}{'pair F1':>8}{'B3 P':>8}{'B3 R':>8}{'B3 F1':>8}{'largest':>9}"
    print(header)

    def line(label: str, m: dict[str, float]) -> str:
        return (f"{label:<24}{m['pair_precision']:>8.4f}{m['pair_recall']:>8.4f}{m['pair_f1']:>8.4f}"
                f"{m['b3_precision']:>8.4f}{m['b3_recall']:>8.4f}{m['b3_f1']:>8.4f}{m['largest_cluster']:>9,}")

    print(line("cmdm_pipeline", ours))
    schema = config.customer_schema
    records = store.read("validated_customers", columns=["source_system", "source_record_id", *identifying_attributes(schema)])
    print(line("shared-value ceiling", shared_value_ceiling(records, truth, schema)))
    if not args.no_splink:
        models = sorted((config.warehouse_path.parent / "models").glob("match_model_v*.json"))
        if not models:
            print("bare Splink: no trained model (too few records)")
        else:
            results = bare_splink(config, models[-1], truth)
            for r in results:
                print(line(f"splink cc p>={r['threshold']}", r))
            best = max(results, key=lambda r: r["pair_f1"])
            print(line(f"splink best (p>={best['threshold']})", best))
    return 0


if __name__ == "__main__":
    sys.exit(main())
