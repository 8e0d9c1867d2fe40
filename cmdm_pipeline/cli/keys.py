"""``cmdm keys``: init, status, rotate, retire, new-store. The parser and the handlers; ``cmdm_pipeline.cli`` wires them.

Nothing here prints key material: ids, paths and counts only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2

EXIT_CODES = (
    "exit codes:\n  0    success\n"
    "  1    refused, nothing changed: the key file exists (init), the key is active or still wraps data keys\n"
    "       (retire), the key store is in use by another process, or it is missing or not the warehouse's\n"
    "       own (every action; new-store: a key store exists)\n"
    "  2    wrong arguments, an invalid config, no key-encryption key, a wrong key, or a key file\n"
    "       group/others can read; nothing was written"
)
_ACTIONS = {
    "init": (
        "create the development key file (refuses to overwrite one)",
        "Create the key file (protection.key_file, default <warehouse folder>/keys/dev.kek.json) with a new "
        "random key-encryption key, mode 0600 in a 0700 folder, and print where. A key file on the same disk "
        "as the warehouse is for development: in production set CMDM_KEK (base64 of 32 random bytes) from a "
        "secret manager.",
    ),
    "status": (
        "list key-encryption keys, the active one, and data keys per key",
        "Print the key-encryption key ids and where they come from (CMDM_KEK or the key file), which one is "
        "active, how many data keys each wraps, and how many data keys were destroyed (crypto-shredded). "
        "Loaded keys are checked against the key store. Never prints key material.",
    ),
    "rotate": (
        "introduce a new key-encryption key and re-wrap every data key under it",
        "Key file: add a new key-encryption key, make it active and re-wrap every data key under it, all or "
        "nothing; no data is re-encrypted. Environment: re-wrap every data key under CMDM_KEK, with the old "
        "key in CMDM_KEK_PREVIOUS (and CMDM_KEK_PREVIOUS_ID if its id was set by hand). The old key keeps "
        "working until `cmdm keys retire`.",
    ),
    "retire": (
        "remove a key-encryption key that no data key uses any more",
        "Retire KEK_ID: refused while it is the active key or still wraps a data key (run `cmdm keys rotate` "
        "first). Key file: the key is removed from the file. Environment: remove CMDM_KEK_PREVIOUS afterwards.",
    ),
    "new-store": (
        "start a new, empty key store in place of one lost for good (drops the encrypted tables)",
        "Only when the key store is lost for good and no backup of it exists (restore the backup if there is "
        "one: nothing is lost then). What it means: every data key is gone, so every encrypted value in the "
        "warehouse can never be decrypted again. The warehouse's encrypted tables (raw, standardised, "
        "validated, quarantined, golden records and their history, consent events) are dropped, and the next "
        "run rebuilds what the sources still hold; golden history and consent events no source holds any more "
        "are lost. Master ids, cross-references and erasure tombstones stay: the new store gets the "
        "warehouse's copy of the blind-index key, so erased people stay erased and lookups keep working. Lens "
        "keys are new: lens tokens change. Needs the key-encryption key (CMDM_KEK or the key file) and "
        "--discard-encrypted-data; refuses where a key store exists.",
    ),
}


def add_keys_parser(
    commands: argparse._SubParsersAction,
    formatter: type[argparse.HelpFormatter],
    config_help: str,
    wrap: Callable[[str], str],
) -> None:
    keys = commands.add_parser(
        "keys",
        help="create, inspect, rotate and retire the encryption keys",
        description=wrap(
            "Encryption keys: a key-encryption key (CMDM_KEK, or a key file) wraps one data key per master "
            "customer and per source record, kept in the key store (protection.keystore; default "
            "<warehouse folder>/keys/keystore.duckdb with the development key file, else "
            "<warehouse folder>-keys/keystore.duckdb, outside the warehouse folder)."
        ),
        epilog=EXIT_CODES,
        formatter_class=formatter,
    )
    actions = keys.add_subparsers(dest="keys_action", metavar="ACTION", title="actions")
    for name, (short, long) in _ACTIONS.items():
        action = actions.add_parser(name, help=short, description=wrap(long), epilog=EXIT_CODES, formatter_class=formatter)
        if name == "retire":
            action.add_argument("kek_id", metavar="KEK_ID", help="id of the key-encryption key to retire")
        if name == "new-store":
            action.add_argument("--discard-encrypted-data", action="store_true", required=True,
                                help="say that you mean it: the warehouse's encrypted tables are dropped")
        action.add_argument("--config", metavar="PATH", help=config_help)
    keys.set_defaults(keys_parser=keys)


#: Actions that write neither the key store nor the warehouse (init writes only the key file): no run lock.
_READ_ONLY = ("init", "status")


def keys_command(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    """Run ``cmdm keys ACTION``; errors go to stderr as ``cmdm: ...`` with the exit codes above."""
    from cmdm_pipeline.config import ConfigError, load_config
    from cmdm_pipeline.errors import ProtectionError
    from cmdm_pipeline.protect.keys.kek import (
        KeyFileExistsError,
        KeyInUseError,
        KeyStoreBusyError,
        KeyStoreExistsError,
        KeyStoreMismatchError,
        KeyStoreMissingError,
    )

    if args.keys_action is None:
        args.keys_parser.print_help(sys.stderr)
        print("\ncmdm keys: error: no ACTION given; choose one of: " + ", ".join(_ACTIONS), file=sys.stderr)
        return EXIT_USAGE
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"cmdm: {exc}", file=sys.stderr)
        return EXIT_USAGE
    handler = {"init": _init, "status": _status, "rotate": _rotate, "retire": _retire,
               "new-store": _new_store}[args.keys_action]
    refused = (KeyFileExistsError, KeyInUseError, KeyStoreBusyError, KeyStoreExistsError, KeyStoreMismatchError,
               KeyStoreMissingError)
    from cmdm_pipeline.run_lock import WarehouseBusyError, run_lock

    try:
        if args.keys_action in _READ_ONLY:
            return handler(config, args, environ)
        # Rewrapping keys while a run encrypts with them would leave that run's new keys behind.
        with run_lock(config.warehouse_path, f"cmdm keys {args.keys_action}"):
            return handler(config, args, environ)
    except (*refused, WarehouseBusyError) as exc:
        print(f"cmdm: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except ProtectionError as exc:
        print(f"cmdm: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _init(config, args, environ) -> int:
    from cmdm_pipeline.protect.keys.kek import (
        KEK_ENV,
        env_mode,
        init_key_file,
        key_file_path,
    )

    if env_mode(environ):
        print(f"cmdm: {KEK_ENV} is set, so keys come from the environment and a key file would be ignored; "
              f"nothing created", file=sys.stderr)
        return EXIT_USAGE
    path = key_file_path(config)
    kek_id = init_key_file(path)
    print(f"created key file {path} (mode 0600) holding key-encryption key {kek_id} (active)")
    print(
        "WARNING: a key file on the warehouse's disk is for DEVELOPMENT only: whoever reads it can decrypt "
        "the warehouse, and losing it loses the encrypted data. Back it up apart from the warehouse; in "
        f"production set {KEK_ENV} (base64 of 32 random bytes) from a secret manager instead.",
        file=sys.stderr,
    )
    return EXIT_OK


def _status(config, args, environ) -> int:
    from cmdm_pipeline.protect.keys.rotation import key_status

    status = key_status(config, environ)
    store, keyring = status.store, status.keyring
    retired = {kek_id: at for kek_id, _, at in store.keks if at is not None}
    lines = []
    if keyring is not None:
        lines.append(f"key-encryption keys, from the {keyring.source}:")
        for kek_id in sorted({*keyring.ids, *store.live_by_kek}):
            mark = "active" if kek_id == keyring.active_id else ("not loaded" if not keyring.has(kek_id) else "")
            lines.append(f"  {kek_id:<28}{mark:<12}{store.live_by_kek.get(kek_id, 0):>12,} data keys")
    else:
        lines.append("key-encryption keys: none usable")
        lines += [f"  {kek_id:<28}{'':<12}{n:>12,} data keys" for kek_id, n in store.live_by_kek.items()]
    lines += [f"  {kek_id:<28}retired {at:%Y-%m-%d}" for kek_id, at in retired.items()]
    if store.exists:
        live = sum(store.live_by_kek.values())
        lines.append(f"key store {store.path}: {live:,} live data keys, {store.destroyed:,} destroyed")
    else:
        lines.append(f"key store {store.path}: not created yet (the first encrypting run creates it)")
    print("\n".join(lines))
    if status.problem:
        print(f"cmdm: {status.problem}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _rotate(config, args, environ) -> int:
    import getpass

    import duckdb

    from cmdm_pipeline.protect.keys.kek import KEK_ENV, PREVIOUS_KEK_ENV
    from cmdm_pipeline.protect.keys.rotation import audit_rotation, rotate

    result = rotate(config, environ)
    total = sum(result.rewrapped.values())
    if result.added_to is not None:
        print(f"new key-encryption key {result.active_id} is active (added to {result.added_to})")
    else:
        print(f"active key-encryption key: {result.active_id} (from {KEK_ENV})")
    detail = ", ".join(f"{n:,} from {kek_id}" for kek_id, n in sorted(result.rewrapped.items()))
    print(f"re-wrapped {total:,} data keys{f' ({detail})' if detail else ''} in {result.seconds:.1f}s; "
          "no data was re-encrypted")
    for kek_id in sorted(result.rewrapped):
        print(f"nothing uses {kek_id} any more: `cmdm keys retire {kek_id}`"
              + (f", then remove {PREVIOUS_KEK_ENV}" if result.added_to is None else ""))
    try:
        audit_rotation(config, result, f"cli:{getpass.getuser()}")
    except duckdb.IOException:
        print(f"cmdm: the rotation is done, but audit_log could not record it: the warehouse "
              f"{config.warehouse_path} is in use; nothing else is wrong", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK


def _retire(config, args, environ) -> int:
    from cmdm_pipeline.protect.keys.kek import PREVIOUS_KEK_ENV
    from cmdm_pipeline.protect.keys.rotation import retire

    result = retire(config, args.kek_id, environ)
    if result.removed_from is not None:
        print(f"retired key-encryption key {result.kek_id}: removed from {result.removed_from}")
    else:
        print(f"retired key-encryption key {result.kek_id}: no data key uses it; remove {PREVIOUS_KEK_ENV} "
              "(and its _ID) from the environment")
    return EXIT_OK


def _new_store(config, args, environ) -> int:
    from cmdm_pipeline.protect.keys.pairing import new_store

    result = new_store(config, environ)
    print(f"started key store {result.store_id} at {result.path}; the warehouse {config.warehouse_path} is paired "
          "with it")
    if result.dropped:
        print(f"dropped {len(result.dropped)} tables whose values can never be decrypted again: "
              f"{', '.join(result.dropped)}; the next `cmdm run` rebuilds them from the sources")
    if result.kept_index_key:
        print("the blind-index key came from the warehouse's copy: erasure tombstones and lookups keep matching")
    print("back the new key store up apart from the warehouse (`cmdm backup` leaves it out)", file=sys.stderr)
    return EXIT_OK
