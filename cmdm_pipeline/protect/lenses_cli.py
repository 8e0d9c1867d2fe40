"""``cmdm lenses``: list the lenses and their outputs; print a lens's file key for the area that owns it.

``list`` prints names, counts and paths only. ``key`` prints key material on purpose, and only that one
lens's key: it is how an operator holding the KEK hands a business area the key to its encrypted file.
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Callable

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2

EXIT_CODES = (
    "exit codes:\n  0    success\n"
    "  1    nothing to show yet: the lens has no key (run `cmdm run` first), or the key store is busy\n"
    "  2    wrong arguments, an invalid config, an unknown lens, or no (or a wrong) key-encryption key"
)


def add_lenses_parser(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    formatter: type[argparse.HelpFormatter],
    config_help: str,
    wrap: Callable[[str], str],
) -> None:
    lenses = commands.add_parser(
        "lenses",
        help="list the purpose lenses, print a lens's file key",
        description=wrap(
            "Purpose lenses are published each run under <warehouse folder>/lenses/ (and into PostgreSQL when "
            "lenses_target is set). A lens revealing personal data is a Parquet file encrypted with the lens's own "
            "key; `cmdm lenses key LENS` prints that key (base64) for the business area that owns the lens."
        ),
        epilog=EXIT_CODES,
        formatter_class=formatter,
    )
    actions = lenses.add_subparsers(dest="lenses_action", metavar="ACTION", title="actions")
    listing = actions.add_parser("list", help="lenses, their treatments, files and whether they are encrypted",
                                 epilog=EXIT_CODES, formatter_class=formatter)
    listing.add_argument("--config", metavar="PATH", help=config_help)
    key = actions.add_parser(
        "key", help="print a lens's file key (base64) on stdout, and how to open the file on stderr",
        description=wrap("Print the AES-256 key of LENS's encrypted Parquet file, base64, on stdout (nothing "
                         "else), and how DuckDB and pyarrow open the file on stderr. Needs the key-encryption key. "
                         "Hand the key to the lens's owners through a secret store, never in a ticket or chat."),
        epilog=EXIT_CODES, formatter_class=formatter,
    )
    key.add_argument("lens", metavar="LENS", help="the lens's name in cmdm.yaml")
    key.add_argument("--config", metavar="PATH", help=config_help)
    lenses.set_defaults(lenses_parser=lenses)


def lenses_command(args: argparse.Namespace) -> int:
    from cmdm_pipeline.config import ConfigError, load_config
    from cmdm_pipeline.protect.keys import KeyMissingError, KeyStoreBusyError, ProtectionError

    if args.lenses_action is None:
        args.lenses_parser.print_help(sys.stderr)
        print("\ncmdm lenses: error: no ACTION given; choose one of: list, key", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"cmdm: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.lenses_action == "list":
        return _list(config)
    try:
        return _key(config, args.lens)
    except KeyStoreBusyError as exc:
        print(f"cmdm: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyMissingError as exc:
        if "have no data key" in str(exc):
            print(f"cmdm: lens {args.lens!r} has no key yet: run `cmdm run` first", file=sys.stderr)
            return EXIT_REFUSED
        print(f"cmdm: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ProtectionError as exc:
        print(f"cmdm: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _list(config) -> int:  # type: ignore[no-untyped-def]
    from cmdm_pipeline.protect.lenses import column_treatments, lens_folder, lens_formats, revealed_pii

    if not config.lenses:
        print("no lenses configured (cmdm.yaml, `lenses:`)")
        return EXIT_OK
    folder = lens_folder(config)
    for lens in config.lenses:
        encrypted = bool(revealed_pii(lens, config.customer_schema))
        consent = f"consent {lens.purpose}" + (f"/{lens.channel}" if lens.channel else "") if lens.purpose else "no consent needed"
        print(f"{lens.name}: {lens.description}\n  {consent}; filters: {dict(lens.where) or 'none'}")
        for treatment, columns in column_treatments(lens).items():
            print(f"  {treatment:<9}{', '.join(columns)}")
        for fmt in lens_formats(lens, config.customer_schema):
            path = folder / f"{lens.name}.{fmt}"
            state = "" if path.exists() else " (not published yet)"
            print(f"  file     {path}{' (encrypted: cmdm lenses key ' + lens.name + ')' if encrypted and fmt == 'parquet' else ''}{state}")
        if config.lenses_target is not None:
            target = config.lenses_target
            print(f"  postgres schema {target.schema_prefix}{lens.name}, role {target.role_prefix}{lens.name}")
    return EXIT_OK


def _key(config, name: str) -> int:  # type: ignore[no-untyped-def]
    from cmdm_pipeline.protect.keys import load_keyring
    from cmdm_pipeline.protect.keystore import KeyStore
    from cmdm_pipeline.protect.lenses import lens_folder, load_lens_keys, revealed_pii

    lens = next((lens for lens in config.lenses if lens.name == name), None)
    if lens is None:
        known = ", ".join(lens.name for lens in config.lenses) or "none"
        print(f"cmdm: no lens {name!r} in the config (lenses: {known})", file=sys.stderr)
        return EXIT_USAGE
    keys = load_lens_keys(KeyStore.for_config(config, load_keyring(config)), [name], create=False)
    encoded = base64.b64encode(keys[name].file).decode()
    print(encoded)
    path = lens_folder(config) / f"{name}.parquet"
    note = "" if revealed_pii(lens, config.customer_schema) else (
        f"(lens {name} reveals no personal data: its files are not encrypted and need no key)\n")
    print(
        f"{note}open {path} with the key above (from a secret store, e.g. $LENS_KEY):\n"
        f"  DuckDB:  PRAGMA add_parquet_key('{name}', '<key>');\n"
        f"           SELECT * FROM read_parquet('{path}', encryption_config = {{footer_key: '{name}'}});\n"
        f"  pyarrow: pq.read_table(path, decryption_properties=pyarrow.parquet.encryption."
        f"create_decryption_properties(base64.b64decode(key)))",
        file=sys.stderr,
    )
    return EXIT_OK
