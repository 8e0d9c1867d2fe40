"""``cmdm consent``: a customer's consent per purpose and channel, its history, or the totals."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

import polars as pl

from cmdm_pipeline.cli.lookup import fail, reading_warehouse

if TYPE_CHECKING:
    from cmdm_pipeline.protect.keys.blind_index import IndexKind

EXIT_OK, EXIT_NOTHING, EXIT_USAGE = 0, 1, 2
EXIT_CODES = (
    "exit codes:\n  0    printed\n"
    "  1    no such customer, no consent tables yet (run `cmdm run`; consent needs a `consent:` section), "
    "or the warehouse is in use\n"
    "  2    wrong arguments, an invalid config, or no (or a wrong) key-encryption key"
)
_CURRENT = ["purpose", "channel", "granted", "decided_at", "event_channel", "lawful_basis", "policy_version", "event_id"]
_HISTORY = ["occurred_at", "event_id", "purpose", "channel", "action", "lawful_basis", "policy_version", "evidence_ref"]


def add_consent_parser(
    commands: argparse._SubParsersAction,
    formatter: type[argparse.HelpFormatter],
    config_help: str,
    wrap: Callable[[str], str],
) -> None:
    consent = commands.add_parser(
        "consent",
        help="show a customer's consent per purpose and channel (and its history), or the totals",
        description=wrap(
            "Show consent from the warehouse tables consent_current (replayed from the append-only "
            "consent_history: no row means not granted) and consent_history. Find the customer by master id, or "
            "by e-mail or phone through the blind index (nothing is decrypted to search). --summary prints, per "
            "purpose and channel, how many customers granted and how many withdrew. Consent is recorded by adding "
            "events to the consent-events source of cmdm.yaml; the next run ingests them."
        ),
        epilog=EXIT_CODES,
        formatter_class=formatter,
    )
    who = consent.add_mutually_exclusive_group(required=True)
    who.add_argument("--master-id", metavar="ID", help="a master id (from golden_customers or `cmdm lookup`)")
    who.add_argument("--email", metavar="EMAIL", help="an e-mail address held by any of the customer's records")
    who.add_argument("--phone", metavar="PHONE", help="a phone number held by any of the customer's records")
    who.add_argument("--summary", action="store_true", help="totals per purpose and channel instead of one customer")
    consent.add_argument("--country", metavar="CC", help="ISO alpha-2 country of a phone number written without +")
    consent.add_argument("--history", action="store_true", help="also list the customer's consent events, oldest first")
    consent.add_argument("--config", metavar="PATH", help=config_help)


def consent_command(args: argparse.Namespace) -> int:
    from cmdm_pipeline.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return fail(str(exc), EXIT_USAGE)
    return reading_warehouse(config, lambda: _consent(config, args))


def _consent(config, args: argparse.Namespace) -> int:
    from cmdm_pipeline.protect.keys.at_rest import open_warehouse, warehouse_keys
    from cmdm_pipeline.protect.lookup import LOOKUP_INDEX, find_masters
    from cmdm_pipeline.tables import CONSENT_CURRENT, CONSENT_HISTORY

    store = open_warehouse(config)
    tables = store.tables()
    if CONSENT_CURRENT not in tables:
        return fail(f"no {CONSENT_CURRENT} in {config.warehouse_path}: run `cmdm run` with a `consent:` section", EXIT_NOTHING)
    current = store.read(CONSENT_CURRENT)
    if args.summary:
        _print_summary(current)
        return EXIT_OK
    if args.master_id is not None:
        ids = pl.Series("master_id", [args.master_id])
    else:
        if LOOKUP_INDEX not in tables:
            return fail(f"no {LOOKUP_INDEX} in {config.warehouse_path} yet: run `cmdm run` first", EXIT_NOTHING)
        kind: IndexKind = "email" if args.email is not None else "phone"
        value = args.email if args.email is not None else args.phone
        keys = warehouse_keys(store, config)
        found = find_masters(store, kind, value, keys, country=args.country.upper() if args.country else None)
        if found is None:
            return fail(f"the {kind} given is empty once normalised", EXIT_USAGE)
        ids = found
    known = store.query("SELECT master_id FROM golden_customers WHERE master_id IN (SELECT unnest($ids))",
                        {"ids": ids.to_list()})["master_id"]
    if known.is_empty():
        print("no customer found")
        return EXIT_NOTHING
    # History rows carry the subject's e-mail and phone: only the columns above are read and shown.
    history = store.read(CONSENT_HISTORY, ["master_id", *_HISTORY]) if args.history and CONSENT_HISTORY in tables else None
    for master_id in known.sort():
        rows = current.filter(pl.col("master_id") == master_id).sort("purpose", "channel")
        print(f"\n{master_id}: " + (f"{rows.filter('granted').height} granted of {rows.height} purpose × channel "
                                    "with an event (no row: not granted)" if rows.height else "no consent event: nothing granted"))
        if rows.height:
            _print_rows(rows.select(_CURRENT))
        if history is not None:
            events = history.filter(pl.col("master_id") == master_id).sort("occurred_at", "event_id")
            print(f"  history: {events.height} event(s) ingested for this master"
                  + (" (events are re-resolved after merges; see consent_current.resolution)" if events.height else ""))
            if events.height:
                _print_rows(events.select(_HISTORY))
    return EXIT_OK


def _print_summary(current: pl.DataFrame) -> None:
    totals = current.group_by("purpose", "channel").agg(
        pl.col("granted").sum().alias("granted"), (~pl.col("granted")).sum().alias("withdrawn")
    ).sort("purpose", "channel")
    print(f"customers with a consent decision, per purpose and channel ({current['master_id'].n_unique():,} customers):")
    _print_rows(totals)


def _print_rows(frame: pl.DataFrame) -> None:
    text = frame.with_columns(pl.all().cast(pl.String).fill_null(""))
    widths = {c: max(len(c), *(len(v) for v in text[c])) for c in text.columns}
    print("  " + "  ".join(f"{c:<{widths[c]}}" for c in text.columns))
    for row in text.iter_rows():
        print("  " + "  ".join(f"{v:<{widths[c]}}" for c, v in zip(text.columns, row, strict=True)))
