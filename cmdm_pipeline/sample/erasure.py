"""Seeded erasure requests for customers of a sample folder (``erasure_requests.csv``).

One request by e-mail, one by source record and one by mobile phone, picked from the folder's CRM, web-shop
and POS files with the consent generator's subject pools, one for an e-mail nobody has (logged
``not_found``) and one planted bad row (a record id without its system)::

    uv run python -m cmdm_pipeline.sample.erasure --sample data/sample --seed 42

Same files and seed, same bytes.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from cmdm_pipeline.sample.consent import subject_pools
from cmdm_pipeline.sample.generator import write_csv

FILE_NAME = "erasure_requests.csv"
COLUMNS = ("RequestId", "Email", "Phone", "MasterId", "SourceSystem", "SourceRecordId", "RequestedAt")


def erasure_requests(folder: Path, seed: int = 42) -> list[dict[str, str]]:
    rng = random.Random(f"{seed}:erasure")
    pools = subject_pools(folder)
    email = rng.choice(pools["email"])[1]
    system, record = rng.choice(pools["record"])
    phone = rng.choice(pools["phone"])[1]
    blank = dict.fromkeys(COLUMNS, "")
    return [
        {**blank, "RequestId": "DSR-0001", "Email": email, "RequestedAt": "2026-11-02T09:15:00Z"},
        {**blank, "RequestId": "DSR-0002", "SourceSystem": system, "SourceRecordId": record, "RequestedAt": "2026-11-05"},
        {**blank, "RequestId": "DSR-0003", "Phone": phone, "RequestedAt": "2026-11-09T16:40:00Z"},
        {**blank, "RequestId": "DSR-0004", "Email": "never.a.customer@example.org", "RequestedAt": "2026-11-10"},
        {**blank, "RequestId": "DSR-0005", "SourceRecordId": record, "RequestedAt": "2026-11-12"},  # no system: held back
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, default=Path("data/sample"), help="folder of the sample sources")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    rows = erasure_requests(args.sample, args.seed)
    write_csv(COLUMNS, rows, args.sample / FILE_NAME, ",")
    print(f"wrote {len(rows)} requests to {args.sample / FILE_NAME}")


if __name__ == "__main__":
    main()
