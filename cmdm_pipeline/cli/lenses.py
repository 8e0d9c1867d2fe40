"""``cmdm lenses``: list the lenses and their outputs; print or rotate a lens's file key.

``list`` prints names, counts and paths only. ``key`` prints key material on purpose, and only that one
lens's key: it is how an operator holding the KEK hands a business area the key to its encrypted file.
``key --rotate`` prints no key: it makes the lens's next key generation (see
:mod:`cmdm_pipeline.protect.lenses.keys`), used from the next publication, and logs ``lens_key_rotated``.
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Callable

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2

EXIT_CODES = (
    "exit codes:\n  0    success\n"
    "  1    nothing to show yet: the lens has no key (run `cmdm run` first), or the key store or the\n"
    "       warehouse is busy (a run is going on)\n"
    "  2    wrong arguments, an invalid config, an unknown lens, or no (or a wrong) key-encryption key"
)


def add_lenses_parser(
    commands: argparse._SubParsersAction,
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
            "key; `cmdm lenses key LENS` prints that key (base64) for the business area that owns the lens, and "
            "`cmdm lenses key LENS --rotate` gives the lens a new key from its next publication on."
        ),
        epilog=EXIT_CODES,
        formatter_class=formatter,
    )
    actions = lenses.add_subparsers(dest="lenses_action", metavar="ACTION", title="actions")
    listing = actions.add_parser("list", help="lenses, their treatments, files and whether they are encrypted",
                                 epilog=EXIT_CODES, formatter_class=formatter)
    listing.add_argument("--config", metavar="PATH", help=config_help)
    key = actions.add_parser(
        "key", help="print a lens's file key (base64) on stdout, and how to open the file on stderr; or --rotate it",
        description=wrap("Print the AES-256 key of LENS's encrypted Parquet file, base64, on stdout (nothing "
                         "else), and how DuckDB and pyarrow open the file on stderr. Needs the key-encryption key. "
                         "Hand the key to the lens's owners through a secret store, never in a ticket or chat. "
                         "With --rotate: create a new key for LENS instead (nothing is printed but its generation "
                         "and id). The next publication (`cmdm run`) encrypts the file with it and then destroys "
                         "the old key; until then the old key stays readable here (`cmdm lenses key LENS` prints "
                         "it), because it is the one that opens the file as published. Tokens do not change."),
        epilog="examples:\n  cmdm lenses key service\n  cmdm lenses key service --rotate\n\n" + EXIT_CODES,
        formatter_class=formatter,
    )
    key.add_argument("lens", metavar="LENS", help="the lens's name in cmdm.yaml")
    key.add_argument("--rotate", action="store_true",
                     help="create the lens's next key, used from the next publication on (the old key stays "
                     "printable until that publication replaces the file)")
    key.add_argument("--config", metavar="PATH", help=config_help)
    lenses.set_defaults(lenses_parser=lenses)


def lenses_command(args: argparse.Namespace) -> int:
    import duckdb

    from cmdm_pipeline.config import ConfigError, load_config
    from cmdm_pipeline.errors import ProtectionError
    from cmdm_pipeline.protect.keys.kek import KeyMissingError, KeyStoreBusyError

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
        return _key(config, args.lens, args.rotate)
    except KeyStoreBusyError as exc:
        print(f"cmdm: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except duckdb.IOException:
        print(f"cmdm: the warehouse {config.warehouse_path} is in use by a running pipeline; try again later",
              file=sys.stderr)
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


def _list(config) -> int:
    from cmdm_pipeline.console import table
    from cmdm_pipeline.protect.lenses.build import (
        column_treatments,
        lens_folder,
        lens_formats,
        revealed_pii,
    )

    if not config.lenses:
        print("no lenses configured (cmdm.yaml, `lenses:`)")
        return EXIT_OK
    folder = lens_folder(config)
    lenses, columns, outputs = [], [], []
    for lens in config.lenses:
        encrypted = bool(revealed_pii(lens, config.customer_schema))
        consent = lens.purpose + (f"/{lens.channel}" if lens.channel else "") if lens.purpose else "not needed"
        where = "; ".join(f"{column} in {', '.join(str(v) for v in values)}" for column, values in lens.where.items())
        lenses.append((lens.name, consent, where or "none", lens.description))
        columns += [(lens.name, treatment, ", ".join(names)) for treatment, names in column_treatments(lens).items()]
        for fmt in lens_formats(lens, config.customer_schema):
            path = folder / f"{lens.name}.{fmt}"
            state = "published" if path.exists() else "not published yet"
            if encrypted and fmt == "parquet":
                state += f"; encrypted: cmdm lenses key {lens.name}"
            outputs.append((lens.name, str(path), state))
        if config.lenses_target is not None:
            target = config.lenses_target
            outputs.append((lens.name, f"postgres schema {target.schema_prefix}{lens.name}",
                            f"role {target.role_prefix}{lens.name}"))
    print(table(["lens", "consent", "filters", "description"], lenses))
    print("\n" + table(["lens", "treatment", "columns"], columns))
    print("\n" + table(["lens", "output", "access"], outputs))
    return EXIT_OK


def _key(config, name: str, rotate: bool) -> int:
    from cmdm_pipeline.protect.keys.kek import load_keyring
    from cmdm_pipeline.protect.keys.keystore import KeyStore
    from cmdm_pipeline.protect.lenses.build import (
        lens_folder,
        load_lens_keys,
        revealed_pii,
    )
    from cmdm_pipeline.protect.lenses.keys import read_generations
    from cmdm_pipeline.warehouse import Warehouse

    lens = next((lens for lens in config.lenses if lens.name == name), None)
    if lens is None:
        known = ", ".join(lens.name for lens in config.lenses) or "none"
        print(f"cmdm: no lens {name!r} in the config (lenses: {known})", file=sys.stderr)
        return EXIT_USAGE
    key_store = KeyStore.for_config(config, load_keyring(config))
    if rotate:
        return _rotate(config, key_store, name)
    generation = read_generations(Warehouse(config.warehouse_path)).current(name)
    keys = load_lens_keys(key_store, [name], create=False, generations={name: generation})
    encoded = base64.b64encode(keys[name].file).decode()
    print(encoded)
    path = lens_folder(config) / f"{name}.parquet"
    note = "" if revealed_pii(lens, config.customer_schema) else (
        f"(lens {name} reveals no personal data: its files are not encrypted and need no key)\n")
    print(
        f"{note}open {path} with the key above (from a secret store, e.g. $LENS_KEY):\n"  # noqa: S608 - identifiers are constants or quoted, values bound
        f"  DuckDB:  PRAGMA add_parquet_key('{name}', '<key>');\n"
        f"           SELECT * FROM read_parquet('{path}', encryption_config = {{footer_key: '{name}'}});\n"
        f"  pyarrow: pq.read_table(path, decryption_properties=pyarrow.parquet.encryption."
        f"create_decryption_properties(base64.b64decode(key)))",
        file=sys.stderr,
    )
    return EXIT_OK


def _rotate(config, key_store, name: str) -> int:
    import getpass

    from cmdm_pipeline.protect.lenses.keys import rotate_lens_key

    rotated = rotate_lens_key(config, key_store, name, f"cli:{getpass.getuser()}")
    print(f"lens {name}: key generation {rotated.generation} created (data key id {rotated.data_key_id}); the next "
          f"`cmdm run` encrypts the lens's file with it and then destroys the older key.\n"
          f"Until then `cmdm lenses key {name}` prints generation {rotated.previous}, which opens the file as published.")
    return EXIT_OK
