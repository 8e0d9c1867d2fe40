"""``cmdm backup DEST``: the parser and the handler; the copying is :mod:`cmdm_pipeline.backup`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from cmdm_pipeline.backup import BackupRefused, backup_warehouse

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
EXIT_CODES = (
    "exit codes:\n  0    the backup is written\n"
    "  1    refused, nothing written: no warehouse yet, DEST exists, the warehouse is in use, or an erasure\n"
    "       is half done (run `cmdm run` to finish it first)\n"
    "  2    wrong arguments or an invalid config"
)



def add_backup_parser(
    commands: argparse._SubParsersAction,
    formatter: type[argparse.HelpFormatter],
    config_help: str,
    wrap: Callable[[str], str],
) -> None:
    backup = commands.add_parser(
        "backup",
        help="copy the warehouse consistently, without the key store",
        description=wrap(
            "Write a consistent copy of the warehouse file to DEST (a new file; mode 0600), taken under the "
            "warehouse's lock so no run changes it meanwhile. The key store and the key file are not in it: "
            "back them up apart, the key store on its own, short schedule, so that an erasure's destroyed keys "
            "are soon gone from every copy. To restore, stop runs and copy the backup to warehouse.path; it "
            "opens only with the key store it was paired with."
        ),
        epilog=EXIT_CODES,
        formatter_class=formatter,
    )
    backup.add_argument("dest", metavar="DEST", help="file to write (refused if it exists)")
    backup.add_argument("--config", metavar="PATH", help=config_help)


def backup_command(args: argparse.Namespace) -> int:
    """Run ``cmdm backup DEST``; errors go to stderr as ``cmdm: ...``."""
    from cmdm_pipeline.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"cmdm: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        done = backup_warehouse(config, Path(args.dest))
    except BackupRefused as exc:
        print(f"cmdm: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"backed up {config.warehouse_path} to {done.path} ({done.size:,} bytes)"
          + (f", paired with key store {done.store_id}" if done.store_id else ""))
    print("the key store and key file are not in the backup: back them up apart", file=sys.stderr)
    return EXIT_OK
