"""A consistent copy of the warehouse file, without the key store (``cmdm backup DEST``, :mod:`cmdm_pipeline.cli.backup`).

Erasure destroys a person's data keys in the key store (crypto-shredding): a backup that holds the
warehouse but not the keys is shredded with it, as long as the key store is backed up apart and on its
own, shorter schedule. A plain copy of the warehouse folder is not that: in development mode the key
store (and the key file) lives in it. The copy is taken while holding DuckDB's write lock, after a
checkpoint, so no run can change the file meanwhile and the copy needs no WAL; it is written beside
``DEST`` and renamed into place, mode 0600.

Restore: stop runs, put the backup back at ``warehouse.path``. It still names its key store (table
``cmdm_key_store``), so it opens only with the store it was paired with (see
:mod:`cmdm_pipeline.protect.keys.pairing`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from cmdm_pipeline.faults import crash_point

if TYPE_CHECKING:
    from cmdm_pipeline.config import ProjectConfig

class BackupRefused(Exception):
    """Nothing was written; the message says why and what to do."""


@dataclass(frozen=True)
class Backup:
    path: Path
    size: int
    store_id: str | None  # the key store the copy is paired with


def backup_warehouse(config: ProjectConfig, dest: Path) -> Backup:
    """Copy the warehouse file to ``dest`` (see the module doc); raises :class:`BackupRefused`."""
    from cmdm_pipeline.protect.erasure.apply import marker_path
    from cmdm_pipeline.protect.keys.pairing import read_warehouse_side
    from cmdm_pipeline.warehouse import Warehouse

    source = config.warehouse_path
    dest = Path(dest).absolute()
    if not source.exists():
        raise BackupRefused(f"no warehouse at {source} yet: run `cmdm run` first")
    if dest.exists():
        raise BackupRefused(f"{dest} exists; refusing to overwrite it (name a new file)")
    if dest.resolve() == source.resolve():
        raise BackupRefused(f"{dest} is the warehouse itself")
    marker = marker_path(Warehouse(source))
    if marker.exists():
        raise BackupRefused(f"an erasure is half done ({marker}): run `cmdm run` to finish it, then back up")
    dest.parent.mkdir(parents=True, exist_ok=True)
    temporary = dest.with_name(f".{dest.name}.partial")
    try:
        con = duckdb.connect(str(source))  # the write lock: no run changes the file while it is copied
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise BackupRefused(f"the warehouse {source} is in use by another process; try again when it has "
                                "finished") from None
        raise
    try:
        con.execute("CHECKPOINT")  # everything in the file: the copy needs no WAL
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out, open(source, "rb") as data:
            shutil.copyfileobj(data, out, length=8 << 20)
            out.flush()
            os.fsync(out.fileno())
        crash_point("backup.copied")
        os.replace(temporary, dest)
    finally:
        con.close()
        temporary.unlink(missing_ok=True)
    return Backup(dest, dest.stat().st_size, read_warehouse_side(dest).store_id)
