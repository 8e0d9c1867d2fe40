"""Latency benchmark of resolve: p50/p95/p99 per request and throughput, build time and memory.

    python -m cmdm_pipeline.web.resolve_bench --records 100000
    python -m cmdm_pipeline.web.resolve_bench --records 1000000 --queries 2000 --workdir /tmp/rb1m

The bundled generator writes ``--records`` source rows (five sources, the shipped cmdm.yaml); they are
extracted, standardised and validated by the stage functions (no Dagster run, no encryption), and a
match model is trained on at most ``--train-records`` of them. Masters are the generator's true customers
(person, or organisation for organisation records), standing in for a batch run's clusters: the latency
does not depend on them. The prior is the model's, scaled to all records (matches grow with the records,
pairs with their square); the link threshold is resolve's default (0.5). A ``--workdir`` keeps the records
and the model for the next run.

Queries, sequential on one thread: half are existing records with a typo in a name (a character dropped
or changed), half new people (a given name, a family name and a city of different records, a new date of
birth and e-mail address). Printed: build seconds and memory, latency percentiles (wall clock, and CPU time
of the process, which a shared machine's other work does not inflate), queries per second, masters
returned per query, and how often a typo query finds its own master first and linked, and a new person is
linked to anyone.

Polars runs each operation on a one-row frame in ~0.1 ms here, and standardising one record takes ~130 of
them; with its thread pool at one thread (``POLARS_MAX_THREADS=1``, set before Polars is imported, as a
resolve server can) they cost a third less on 2 busy cores. The benchmark prints which it ran with.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

KEY = ["source_system", "source_record_id"]
RECORDS_FILE, MODEL_FILE, CONFIG_FILE = "resolve_bench_records.parquet", "resolve_bench_model.json", "cmdm.yaml"


def _rss_mb() -> float:
    statm = Path("/proc/self/statm")
    if statm.exists():
        return int(statm.read_text().split()[1]) * resource.getpagesize() / 1e6
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def prepare(records: int, seed: int, workdir: Path, train_records: int) -> tuple[Any, pl.DataFrame, dict[str, Any]]:
    """(config, validated records with master_id, model), made once per workdir."""
    from cmdm_pipeline.benchmark import truth_entities
    from cmdm_pipeline.benchmark_data import generated_config
    from cmdm_pipeline.config import load_config
    from cmdm_pipeline.stages.extract import extract
    from cmdm_pipeline.stages.match_features import matching_frame
    from cmdm_pipeline.stages.match_model import train_model
    from cmdm_pipeline.stages.standardise import standardise
    from cmdm_pipeline.stages.validate import validate

    if (workdir / RECORDS_FILE).exists() and (workdir / MODEL_FILE).exists():
        print(f"reusing records and model in {workdir}")
        return (load_config(workdir / CONFIG_FILE), pl.read_parquet(workdir / RECORDS_FILE),
                json.loads((workdir / MODEL_FILE).read_text()))
    started = time.perf_counter()
    config = generated_config(records, seed, workdir, encrypt=False)
    now = dt.datetime.now(dt.UTC)
    validated = []
    for source in config.sources:
        standardised = standardise(extract(source, config, ingested_at=now), source, config).drop("source_values")
        validated.append(validate(standardised, config.customer_schema, "bench", now.date())[0])
    frame = pl.concat(validated).sort(KEY)
    truth = truth_entities(workdir / "data" / "truth" / "ground_truth.csv", frame)
    frame = frame.join(truth.rename({"entity": "master_id"}), on=KEY, how="left").with_columns(
        pl.col("master_id").fill_null(pl.concat_str(KEY, separator=":")))
    print(f"prepared {frame.height:,} validated records in {time.perf_counter() - started:.0f}s")
    started = time.perf_counter()
    features = matching_frame(frame, config.customer_schema)
    sample = features.sample(min(train_records, features.height), seed=seed).sort("unique_id")
    sample = sample.with_columns(pl.int_range(0, pl.len(), dtype=pl.Int64).alias("unique_id"))
    model = train_model(sample, config.customer_schema, config.matching, version=1).settings
    # Matches grow with the records, pairs with their square: the prior of all records.
    model["probability_two_random_records_match"] *= sample.height / features.height
    print(f"trained the model on {sample.height:,} records in {time.perf_counter() - started:.0f}s")
    frame.write_parquet(workdir / RECORDS_FILE)
    (workdir / MODEL_FILE).write_text(json.dumps(model))
    return config, frame, model


def _typo(value: str, rng: random.Random) -> str:
    i = rng.randrange(len(value))
    if rng.random() < 0.5 and len(value) > 3:
        return value[:i] + value[i + 1:]
    return value[:i] + rng.choice("aeioulnrst") + value[i + 1:]


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value


def queries(records: pl.DataFrame, attributes: list[str], count: int, seed: int) -> list[tuple[str, dict[str, Any], str]]:
    """(kind, record, master_id) of ``count`` queries: existing people with a typo, and new people."""
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    people = records.filter((pl.col("party_type") == "person") & pl.col("first_name").is_not_null()
                            & pl.col("last_name").is_not_null())
    rows = people.sample(count, seed=seed, with_replacement=True).to_dicts()
    others = people.sample(3 * count, seed=seed + 1, with_replacement=True).to_dicts()
    made = []
    for i, row in enumerate(rows):
        record = {a: _plain(row[a]) for a in attributes if row.get(a) is not None}
        if i % 2 == 0:
            name = rng.choice(["first_name", "last_name"])
            record[name] = _typo(record[name], rng)
            made.append(("typo", record, row["master_id"]))
        else:
            given, family, place = others[3 * i // 2], others[3 * i // 2 + 1], others[3 * i // 2 + 2]
            born = dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(25_000))
            record = {"first_name": given["first_name"], "last_name": family["last_name"], "city": place["city"],
                      "postcode": place["postcode"], "country": place["country"], "date_of_birth": born.isoformat(),
                      "email": f"new.person.{i}@example.net"}
            made.append(("new", {k: v for k, v in record.items() if v is not None}, ""))
    return made


def polars_op_microseconds(repeats: int = 500) -> float:
    """How long this machine takes for one Polars operation on a one-row frame, now: a shared machine's speed
    varies by half from hour to hour, and a resolve is some 200 such operations."""
    frame = pl.DataFrame({"a": ["x"]})
    started = time.perf_counter()
    for _ in range(repeats):
        frame.filter(pl.col("a").str.contains("y"))
    return (time.perf_counter() - started) / repeats * 1e6


def percentiles(seconds: list[float]) -> str:
    ms = np.array(seconds) * 1000
    return (f"p50 {np.percentile(ms, 50):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, "
            f"max {ms.max():.1f} ms")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from cmdm_pipeline.web.resolve import ResolveIndex

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cmdm-resolve-bench-"))
    config, records, model = prepare(args.records, args.seed, workdir, args.train_records)
    before = _rss_mb()
    started = time.perf_counter()
    index = ResolveIndex.build(records, config, model)
    build_seconds = time.perf_counter() - started
    after = _rss_mb()
    print(f"index of {records.height:,} records built in {build_seconds:.1f}s; RSS {before:,.0f} -> {after:,.0f} MB "
          f"(+{after - before:,.0f} MB; index arrays {index.nbytes / 1e6:,.0f} MB)")
    attributes = list(config.customer_schema.attributes)
    made = queries(records, attributes, args.queries, args.seed)
    speed = polars_op_microseconds()
    print(f"machine speed: one Polars operation on a one-row frame takes {speed:.0f} us")
    for _, record, _ in made[:20]:  # warm-up: imports, caches
        index.resolve(record)
    seconds: dict[str, list[float]] = {"typo": [], "new": []}
    candidates: list[int] = []
    found_first = linked_first = new_linked = 0
    wall = time.perf_counter()
    cpu: list[float] = []
    for kind, record, master in made:
        started, cpu_started = time.perf_counter(), time.process_time()
        result = index.resolve(record)
        seconds[kind].append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
        candidates.append(len(result.candidates))
        top = result.candidates[0] if result.candidates else None
        if kind == "typo" and top is not None and top.master_id == master:
            found_first += 1
            linked_first += top.linked
        if kind == "new" and any(c.linked for c in result.candidates):
            new_linked += 1
    wall = time.perf_counter() - wall
    everything = seconds["typo"] + seconds["new"]
    typos, new = len(seconds["typo"]), len(seconds["new"])
    print(f"{len(everything):,} resolves: {percentiles(everything)}; {len(everything) / wall:.1f} per second "
          f"(one thread; Polars thread pool {pl.thread_pool_size()})")
    print(f"  typo queries: {percentiles(seconds['typo'])}")
    print(f"  new people:   {percentiles(seconds['new'])}")
    # CPU time of the process per resolve: what a request costs whatever else the machine runs meanwhile.
    print(f"  CPU per resolve: {percentiles(cpu)}")
    print(f"  masters returned per query (limit 5): mean {np.mean(candidates):.2f}")
    print(f"typo queries finding their master first: {found_first / max(typos, 1):.1%} (linked: {linked_first / max(typos, 1):.1%}); "
          f"new people linked to someone: {new_linked / max(new, 1):.1%}")
    ms = np.array(everything) * 1000
    return {"records": records.height, "build_seconds": build_seconds, "rss_added_mb": after - before,
            "index_mb": index.nbytes / 1e6, "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "per_second": len(everything) / wall,
            "polars_threads": pl.thread_pool_size(), "polars_op_us": speed, "cpu_p50_ms": float(np.percentile(cpu, 50) * 1000),
            "cpu_p95_ms": float(np.percentile(cpu, 95) * 1000),
            "typo_found_first": found_first / max(typos, 1), "new_linked": new_linked / max(new, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cmdm_pipeline.web.resolve_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000, help="source rows to generate (default 100000)")
    parser.add_argument("--queries", type=int, default=2_000, help="resolves to time (default 2000)")
    parser.add_argument("--train-records", type=int, default=200_000,
                        help="records the model is trained on at most (default 200000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", type=Path, default=None, help="keep (and reuse) records and model here")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.records < 50 or args.queries < 2:
        parser.error("--records must be at least 50 and --queries at least 2")
    figures = run(args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0 if math.isfinite(figures["p95_ms"]) else 1


if __name__ == "__main__":
    sys.exit(main())
