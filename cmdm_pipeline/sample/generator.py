"""Seeded generator of realistic, overlapping, deliberately dirty customer data.

Writes five source files (CRM, ERP, web shop, POS/loyalty, NPS survey) and
``truth/ground_truth.csv`` mapping every source row to the true person and organisation::

    uv run python -m cmdm_pipeline.sample --records 10000 --seed 42 --out data/sample

The same ``--records`` and ``--seed`` always give byte-identical files: every random choice
comes from ``random.Random`` instances seeded from the seed (never the global generator),
Faker instances are seeded with ``seed_instance``, and all dates are anchored to
:data:`cmdm_pipeline.sample.common.REFERENCE_DATE`, never the wall clock.

This module writes the files (layout, ground truth) and is the command line; the rest lives in
``common`` (seeded draws, countries), ``noise`` (typos, case, accents, nicknames), ``identifiers``
(phone and VAT numbers), ``world`` (the true organisations and people), ``sources`` (how each
source system spells and damages them, its ids) and ``defects`` (the planted rule breakers).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cmdm_pipeline.sample.defects import Breaker
from cmdm_pipeline.sample.sources import COLUMNS, DELIMITERS, ID_COLUMNS, SOURCE_FILES, Row, build_tables
from cmdm_pipeline.sample.world import World

TRUTH_FILE = Path("truth") / "ground_truth.csv"
TRUTH_COLUMNS = ("source_system", "source_record_id", "person_id", "organisation_id")


# --------------------------------------------------------------------------------------------
# Writing


def write_tables(tables: dict[str, list[Row]], out: Path) -> dict[str, int]:
    """Writes the five source files and the ground truth; returns rows written per file."""
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for source, filename in SOURCE_FILES.items():
        path = out / filename
        if source == "shop":
            write_jsonl(tables[source], path)
        else:
            write_csv(COLUMNS[source], [row.values for row in tables[source]], path, DELIMITERS[source])
        counts[filename] = len(tables[source])
    truth = [
        {"source_system": source, "source_record_id": str(row.values[ID_COLUMNS[source]]),
         "person_id": row.person_id, "organisation_id": row.organisation_id}
        for source in SOURCE_FILES
        for row in tables[source]
    ]
    (out / TRUTH_FILE).parent.mkdir(parents=True, exist_ok=True)
    write_csv(TRUTH_COLUMNS, truth, out / TRUTH_FILE, ",")
    counts[TRUTH_FILE.as_posix()] = len(truth)
    return counts


def write_csv(columns: Sequence[str], rows: list[dict[str, Any]], path: Path, delimiter: str) -> None:
    """Writes UTF-8 CSV with a header, minimal quoting and "\\n" line ends."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([row[column] for column in columns] for row in rows)


def write_jsonl(rows: list[Row], path: Path) -> None:
    """Writes one JSON object per line, keys in :data:`SHOP_KEYS` order, non-ASCII kept as is."""
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row.values, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------------------------
# Entry points


def generate(records: int, seed: int, out: Path) -> dict[str, int]:
    """Generates about ``records`` source rows in total into ``out``; returns rows written per file.

    The keys are file paths relative to ``out`` (``truth/ground_truth.csv`` included).
    """
    if records < 50:
        raise ValueError("records must be at least 50")
    tables = build_tables(World(records, seed).build(), seed)
    Breaker(tables, random.Random(f"{seed}:defects"), records).run()
    return write_tables(tables, Path(out))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Returns the parsed command line."""
    parser = argparse.ArgumentParser(
        prog="python -m cmdm_pipeline.sample",
        description=(
            "Generate overlapping, deliberately dirty customer data for five source systems "
            "(crm_contacts.csv, erp_customers.csv, shop_customers.jsonl, pos_loyalty.csv, survey_nps.csv) "
            "and truth/ground_truth.csv mapping every source row to its true person. "
            "The same --records and --seed always give byte-identical files."
        ),
    )
    parser.add_argument("--records", type=int, default=10000, metavar="N",
                        help="approximate total number of source rows over all five files (default: 10000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    parser.add_argument("--out", type=Path, default=Path("data/sample"), metavar="DIR",
                        help="output folder, created if missing; files in it are overwritten (default: data/sample)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the generator from the command line; returns the process exit code."""
    args = parse_args(argv)
    started = time.perf_counter()
    counts = generate(args.records, args.seed, args.out)
    for filename, rows in counts.items():
        print(f"{filename:<28} {rows:>9,} rows  {args.out / filename}")
    sources = sum(rows for name, rows in counts.items() if name != TRUTH_FILE.as_posix())
    print(f"{'total source rows':<28} {sources:>9,} rows  in {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
