"""Seeded consent events for the customers of a sample folder (``consent_events.csv``).

Subjects are real e-mails, phones and record ids read from the folder's CRM, web-shop and
POS files, so the events resolve to masters. Grants, later withdrawals, same-second ties
(the withdrawal must win), all-channel events, spelling variants, and a few planted bad rows
(unknown purpose, channel and action, a bad timestamp, no subject, an invalid e-mail, an unknown
source, an exact copy) and one subject nobody has::

    uv run python -m cmdm_pipeline.sample.consent --sample data/sample --seed 42

Same files and seed, same bytes: one ``random.Random`` seeded from the seed, times anchored to
:data:`cmdm_pipeline.sample.common.REFERENCE_DATE`.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

from cmdm_pipeline.sample.common import REFERENCE_DATE
from cmdm_pipeline.sample.generator import write_csv

FILE_NAME = "consent_events.csv"
COLUMNS = (
    "EventId", "Email", "Phone", "SourceSystem", "SourceRecordId", "Purpose", "Channel", "Action",
    "OccurredAt", "LawfulBasis", "PolicyVersion", "EvidenceRef",
)
_EMAIL = re.compile(r"^[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$")
_START = datetime(2024, 1, 1, tzinfo=UTC)
_END = datetime.combine(REFERENCE_DATE, time(0), tzinfo=UTC)
_EVIDENCE = {"email": "web-form", "sms": "sms-keyword", "phone": "call-recording", "post": "paper-form", "any": "web-form"}


def _fields(path: Path, *names: str) -> Iterator[tuple[str, ...]]:
    """``names``' values of each row of a CSV file, read as a stream (at 10M records the files as dicts held GBs)."""
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            yield tuple(row[name] for name in names)


def subject_pools(folder: Path) -> dict[str, list[tuple[str, str]]]:
    """Sorted, de-duplicated subjects: ("", email), ("", phone) and (source_system, record id)."""
    emails: set[str] = set()
    phones: set[str] = set()
    records: set[tuple[str, str]] = set()
    for email, phone, key in _fields(folder / "crm_contacts.csv", "Email", "MobilePhone", "Id"):
        emails.add(email.strip().lower())
        phones.add(phone.strip())
        records.add(("crm", key))
    for email, key in _fields(folder / "pos_loyalty.csv", "Email", "CardNo"):
        emails.add(email.strip().lower())
        records.add(("pos", key))
    with (folder / "shop_customers.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                emails.add((row.get("email") or "").strip().lower())
                phones.add((row.get("phone") or "").strip())
                records.add(("shop", str(row["customer_id"])))
    return {
        "email": sorted(("", e) for e in emails if _EMAIL.match(e)),
        "phone": sorted(("", p) for p in phones if p.startswith("+") and len(re.sub(r"\D", "", p)) >= 9),
        "record": sorted((s, i) for s, i in records if i.strip()),
    }


def _stamp(rng: random.Random, at: datetime) -> str:
    """ISO 8601: mostly UTC with Z, sometimes the same instant with a European offset."""
    if rng.random() < 0.15:
        hours = rng.choice((1, 2))
        return (at + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S") + f"+0{hours}:00"
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def consent_events(folder: Path, seed: int = 42, subjects: int = 200) -> list[dict[str, str]]:
    """The events, in time order, with the planted bad rows among them."""
    rng = random.Random(f"{seed}:consent")
    pools = subject_pools(folder)
    shares = {"email": 0.45, "phone": 0.2, "record": 0.35}
    chosen = [(kind, s) for kind, share in shares.items() for s in rng.sample(pools[kind], min(len(pools[kind]), round(subjects * share)))]
    events: list[tuple[datetime, dict[str, str]]] = []

    def add(kind: str, subject: tuple[str, str], purpose: str, channel: str, action: str, at: datetime) -> None:
        email = subject[1] if kind == "email" else ""
        if email and rng.random() < 0.2:
            email = f" {email[0].upper()}{email[1:]} "  # the standardiser must still find it
        basis = "legitimate interests" if purpose == "profiling" and rng.random() < 0.3 else "consent"
        verb = {"granted": ("granted", "opt-in"), "withdrawn": ("withdrawn", "opt-out")}[action]
        events.append((at, {
            "Email": email, "Phone": subject[1] if kind == "phone" else "",
            "SourceSystem": subject[0] if kind == "record" else "", "SourceRecordId": subject[1] if kind == "record" else "",
            "Purpose": purpose, "Channel": channel, "Action": verb[1] if rng.random() < 0.1 else verb[0],
            "OccurredAt": _stamp(rng, at), "LawfulBasis": basis,
            "PolicyVersion": "privacy-2024.1" if at.year < 2025 else "privacy-2025.2",
            "EvidenceRef": f"{_EVIDENCE[channel] if action == 'granted' else 'unsubscribe'}/{rng.getrandbits(32):08x}",
        }))

    span = int((_END - _START).total_seconds())
    for kind, subject in chosen:
        purpose = rng.choices(("marketing", "profiling", "sharing"), (0.6, 0.25, 0.15))[0]
        channel = rng.choice(("email", "sms", "post", "any")) if purpose == "marketing" else "any"
        at = _START + timedelta(seconds=rng.randrange(span * 9 // 10))
        add(kind, subject, purpose, channel, "granted", at)
        roll = rng.random()
        if roll < 0.05:
            add(kind, subject, purpose, channel, "withdrawn", at)  # same second: the withdrawal wins
        elif roll < 0.4:
            later = at + timedelta(days=rng.randint(1, 300), seconds=rng.randrange(86400))
            add(kind, subject, purpose, rng.choice((channel, "any")), "withdrawn", min(later, _END))
        if rng.random() < 0.15:
            add(kind, subject, "sharing" if purpose != "sharing" else "marketing", "any", "granted",
                at + timedelta(days=rng.randint(0, 30)))
    events.sort(key=lambda pair: (pair[0], json.dumps(pair[1], sort_keys=True)))
    rows = [{"EventId": f"CE-{i:06d}", **row} for i, (_, row) in enumerate(events, start=1)]
    for row in rng.sample(rows, max(1, len(rows) // 20)):
        row["EventId"] = ""  # no id: the content hash identifies the event
    return _plant(rows, rng)


def _plant(rows: list[dict[str, str]], rng: random.Random) -> list[dict[str, str]]:
    """Bad rows every run must quarantine with a reason, and a subject nobody has (kept, unresolved)."""
    base = {**rows[0], "EventId": ""}
    planted = [
        {**base, "Purpose": "newsletter"}, {**base, "Channel": "fax"}, {**base, "OccurredAt": "next tuesday"},
        {**base, "Action": "maybe"}, {**base, "Email": "", "Phone": "", "SourceSystem": "", "SourceRecordId": ""},
        {**base, "Email": "not-an-email", "Phone": "", "SourceSystem": "", "SourceRecordId": ""},
        {**base, "Email": "", "Phone": "", "SourceSystem": "legacy_crm", "SourceRecordId": "L-1"},
        {**base, "Email": "no.such.customer@consent-example.org", "Phone": "", "SourceSystem": "", "SourceRecordId": ""},
        dict(rows[1]),  # an exact copy of another row
    ]
    out = list(rows)
    for i, row in enumerate(planted):
        out.insert(rng.randrange(2, len(out)) if i < len(planted) - 1 else 2, {**row, "EventId": row["EventId"] or f"CE-9{i:05d}"})
    return out


def write_consent_events(folder: Path, seed: int = 42, subjects: int = 200, out: Path | None = None) -> int:
    """Writes ``consent_events.csv`` (into ``folder`` unless ``out`` is given); returns the rows written."""
    rows = consent_events(Path(folder), seed, subjects)
    write_csv(COLUMNS, rows, Path(out) if out else Path(folder) / FILE_NAME, ",")
    return len(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cmdm_pipeline.sample.consent", description=(
        "Write consent_events.csv for the customers of a sample folder (made by python -m cmdm_pipeline.sample)."))
    parser.add_argument("--sample", type=Path, default=Path("data/sample"), metavar="DIR", help="sample folder (default: data/sample)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    parser.add_argument("--subjects", type=int, default=200, metavar="N", help="customers with consent events (default: 200)")
    args = parser.parse_args(argv)
    print(f"{FILE_NAME}: {write_consent_events(args.sample, args.seed, args.subjects):,} events in {args.sample}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
