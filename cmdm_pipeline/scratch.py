"""Private scratch folders: where records go when a tool needs them on disk (Splink's DuckDB).

A folder is ``<root>/cmdm-scratch-<purpose>-<pid>-<random>`` (``root``: the temp folder, i.e. ``TMPDIR``),
mode 0700, and what is created in it while it is open is 0600 (the process's umask is narrowed: DuckDB
creates its database, WAL and spill files with the umask's modes). It is removed when the work ends.
A process killed with SIGKILL cannot remove its folder: the next :func:`private_scratch` under the same
root removes every folder whose owner is dead. The owner holds a lock on ``owner.lock`` inside its
folder for as long as the folder is open; the kernel drops the lock when the process dies, however it
dies, so a live run's folder is never touched and a reused pid does not keep a dead run's records.
Folders that earlier versions left (``cmdm-splink-<random>``) are swept too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

PREFIX = "cmdm-scratch-"
LOCK = "owner.lock"
#: Splink's scratch folders before this module (``cmdm-splink-<random>``, no lock of ours): DuckDB's own
#: lock on the database file in it tells whether a run still has it open.
LEGACY, LEGACY_DATABASE = "cmdm-splink-", "splink.duckdb"


@contextlib.contextmanager
def private_scratch(purpose: str, root: Path | None = None, private_files: bool = True) -> Iterator[Path]:
    """A fresh private folder for ``purpose``, removed on the way out; dead runs' folders are removed first.

    ``private_files=False`` keeps the process's umask: for a folder held open for a whole run (the
    warehouse's spill folder), where a narrowed umask would also make the run's published files (lenses,
    reports) private; the 0700 folder already keeps others out of what is in it."""
    root = Path(root or tempfile.gettempdir())
    sweep(root)
    # Narrowed for the whole use, not just the folder: DuckDB creates files in it at any time (spilling). The
    # umask is the process's: a file another thread creates meanwhile is private too, never wider.
    umask = os.umask(0o077)
    if not private_files:
        os.umask(umask)
    try:
        folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{purpose}-{os.getpid()}-", dir=root))  # 0700
        try:
            # Locked before it takes its name: a sweep never finds an unlocked lock of a live run.
            lock = os.open(folder / f"{LOCK}.new", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.rename(folder / f"{LOCK}.new", folder / LOCK)
                yield folder
            finally:
                os.close(lock)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        os.umask(umask)  # restores the caller's umask in both cases


def sweep(root: Path) -> list[Path]:
    """Remove the scratch folders under ``root`` whose owning process is dead; returns them."""
    removed = []
    for folder in [*root.glob(f"{PREFIX}*"), *root.glob(f"{LEGACY}*")]:
        if _ours(folder) and (_legacy_abandoned(folder) if folder.name.startswith(LEGACY) else _abandoned(folder)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _ours(folder: Path) -> bool:
    """A real folder of this user: never someone else's, nor a link planted in a shared temp folder."""
    try:
        info = folder.lstat()
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()


def _legacy_abandoned(folder: Path) -> bool:
    try:
        database = os.open(folder / LEGACY_DATABASE, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        # DuckDB's lock is a POSIX record lock: probing it from this process is safe only because this
        # process never opens a legacy folder's database (closing the probe would drop its own lock).
        fcntl.lockf(database, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # a run of an earlier version has it open
    finally:
        os.close(database)
    return True


def _abandoned(folder: Path) -> bool:
    try:
        lock = os.open(folder / LOCK, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        # Killed between creating the folder and its lock, or still starting: the pid in the name decides.
        return not _alive(_pid(folder.name))
    except OSError:
        return False
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # its owner is running
    finally:
        os.close(lock)  # closing releases a lock taken here: the folder is removed right after
    return True


def _pid(name: str) -> int | None:
    parts = name.removeprefix(PREFIX).split("-")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None


def _alive(pid: int | None) -> bool:
    if pid is None:
        return True  # not a name we made: leave it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True
