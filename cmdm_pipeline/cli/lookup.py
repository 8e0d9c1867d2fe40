"""``cmdm lookup``: find a customer by e-mail, phone or national id, shown through a lens."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from cmdm_pipeline.protect.keys.blind_index import IndexKind

EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE = 0, 1, 2
EXIT_CODES = (
    "exit codes:\n  0    found; what the lens allows is printed\n"
    "  1    no customer has that value, nothing to look up yet (run `cmdm run` first), or the warehouse is in use\n"
    "  2    wrong arguments, an invalid config, an unknown lens, or no (or a wrong) key-encryption key"
)


def add_lookup_parser(
    commands: argparse._SubParsersAction,
    formatter: type[argparse.HelpFormatter],
    config_help: str,
    wrap: Callable[[str], str],
) -> None:
    lookup = commands.add_parser(
        "lookup",
        help="find a customer by e-mail, phone or national id (blind index; nothing is decrypted to search)",
        description=wrap(
            "Find the master customers holding a value in any of their source records, through the blind index "
            "table customer_lookup_index: the value is normalised (e-mail lower-cased, phone to E.164, id without "
            "separators), keyed-hashed and compared; no stored value is decrypted to search. Without --lens only "
            "the master ids and counts are printed; with --lens, the golden record as that lens shows it (its "
            "columns, masks, tokens, consent and row filters: a customer the lens may not see is not shown)."
        ),
        epilog=EXIT_CODES,
        formatter_class=formatter,
    )
    value = lookup.add_mutually_exclusive_group(required=True)
    value.add_argument("--email", metavar="EMAIL", help="an e-mail address, any letter case")
    value.add_argument("--phone", metavar="PHONE", help="a phone number, E.164 or national with --country")
    value.add_argument("--national-id", metavar="ID", help="a national id, with or without separators")
    lookup.add_argument("--country", metavar="CC", help="ISO alpha-2 country of a phone number written without +")
    lookup.add_argument("--lens", metavar="NAME", help="show the customers as this lens of cmdm.yaml shows them")
    lookup.add_argument("--config", metavar="PATH", help=config_help)


def lookup_command(args: argparse.Namespace) -> int:
    from cmdm_pipeline.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return fail(str(exc), EXIT_USAGE)
    lens = next((lens for lens in config.lenses if lens.name == args.lens), None) if args.lens else None
    if args.lens and lens is None:
        known = ", ".join(lens.name for lens in config.lenses) or "none configured"
        return fail(f"no lens {args.lens!r} in {config.base_dir / 'cmdm.yaml'} (lenses: {known})", EXIT_USAGE)
    return reading_warehouse(config, lambda: _lookup(config, args, lens))


def reading_warehouse(config, read: Callable[[], int]) -> int:
    """``read()``, with the errors of reading the warehouse as messages and exit codes: no warehouse yet or
    one in use (1), a key or lens problem (2)."""
    import duckdb

    from cmdm_pipeline.errors import ProtectionError
    from cmdm_pipeline.protect.lenses.build import LensError

    try:
        return read()
    except FileNotFoundError:
        return fail(f"no warehouse at {config.warehouse_path} yet: run `cmdm run` first", EXIT_NOT_FOUND)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            return fail(f"the warehouse {config.warehouse_path} is in use by a running pipeline; try again after it", EXIT_NOT_FOUND)
        raise
    except (ProtectionError, LensError) as exc:
        return fail(str(exc), EXIT_USAGE)


def _lookup(config, args: argparse.Namespace, lens) -> int:
    from cmdm_pipeline.protect.keys.at_rest import open_warehouse, warehouse_keys
    from cmdm_pipeline.protect.lenses.build import build_lens, load_lens_keys
    from cmdm_pipeline.protect.lookup import LOOKUP_INDEX, find_masters
    from cmdm_pipeline.tables import CONSENT_CURRENT, GOLDEN

    given: list[tuple[IndexKind, str | None]] = [("email", args.email), ("phone", args.phone),
                                                 ("national_id", args.national_id)]
    kind, value = next((k, v) for k, v in given if v is not None)
    store = open_warehouse(config)
    if LOOKUP_INDEX not in store.tables():
        return fail(f"no {LOOKUP_INDEX} in {config.warehouse_path} yet: run `cmdm run` first", EXIT_NOT_FOUND)
    keys = warehouse_keys(store, config)
    ids = find_masters(store, kind, value, keys, country=args.country.upper() if args.country else None)
    if ids is None:
        return fail(f"the {kind.replace('_', ' ')} given is empty once normalised", EXIT_USAGE)
    if ids.is_empty():
        print(f"no customer found by that {kind.replace('_', ' ')}")
        return EXIT_NOT_FOUND
    golden = store.read(GOLDEN, where=pl.col("master_id").is_in(ids.implode()))  # only they are decrypted
    if lens is None:
        print(f"{ids.len()} customer(s) found (pass --lens NAME to see them as a lens shows them):")
        for row in golden.select("master_id", "party_type", "record_count", "source_systems").iter_rows(named=True):
            print(f"  {row['master_id']}  {row['party_type']}, {row['record_count']} record(s) from "
                  f"{', '.join(row['source_systems'])}")
        return EXIT_OK
    consent = store.read(CONSENT_CURRENT) if lens.purpose and CONSENT_CURRENT in store.tables() else None
    token_key = load_lens_keys(keys, [lens.name], create=False)[lens.name].token
    shown = build_lens(golden, consent, lens, config.customer_schema, token_key)
    hidden = ids.len() - shown.height
    print(f"{ids.len()} customer(s) found; lens {lens.name!r} shows {shown.height}"
          + (f" ({hidden} not visible to it: no consent for {lens.purpose!r} or outside its filters)" if hidden else ""))
    width = max((len(c) for c in shown.columns), default=0)
    for row in shown.iter_rows(named=True):
        print()
        for column, cell in row.items():
            print(f"  {column:<{width}}  {'' if cell is None else cell}")
    return EXIT_OK


def fail(message: str, code: int) -> int:
    print(f"cmdm: {message}", file=sys.stderr)
    return code
