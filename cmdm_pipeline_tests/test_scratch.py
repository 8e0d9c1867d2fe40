"""Private scratch folders: modes, removal, and the sweep of folders left by killed runs."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from cmdm_pipeline.scratch import LEGACY, LEGACY_DATABASE, LOCK, PREFIX, private_scratch, sweep


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_scratch_folder_is_private_and_removed_afterwards(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        with private_scratch("splink", tmp_path) as folder:
            assert folder.parent == tmp_path and folder.name.startswith(f"{PREFIX}splink-{os.getpid()}-")
            assert mode(folder) == 0o700
            # DuckDB creates its database, WAL and spill files with the umask's modes.
            con = duckdb.connect(str(folder / "scratch.duckdb"))
            con.execute("CREATE TABLE t AS SELECT 'ada@example.org' AS email")
            (folder / "spill").mkdir()
            files = [p for p in folder.rglob("*") if p.is_file()]
            assert {p.name for p in files} >= {"scratch.duckdb", "scratch.duckdb.wal", LOCK}
            assert {mode(p) for p in files} == {0o600} and mode(folder / "spill") == 0o700
            con.close()
        assert not folder.exists()
        assert os.umask(0o022) == 0o022  # restored for the rest of the process
    finally:
        os.umask(umask)


def test_a_scratch_folder_is_removed_when_the_work_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), private_scratch("splink", tmp_path) as folder:
        (folder / "records").write_text("ada@example.org")
        raise RuntimeError("step failed")
    assert list(tmp_path.iterdir()) == []


HOLD = """
import os, signal, sys
from pathlib import Path
from cmdm_pipeline.scratch import private_scratch
with private_scratch("splink", Path(sys.argv[1])) as folder:
    (folder / "records").write_text("ada@example.org")
    print(folder, flush=True)
    if sys.argv[2] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.stdin.read()  # holds the folder until the test closes stdin
"""


def _holder(root: Path, how: str) -> tuple[subprocess.Popen[str], Path]:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(root), how], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    return child, Path(child.stdout.readline().strip())


def test_the_sweep_removes_a_killed_runs_folder_and_never_a_live_ones(tmp_path: Path) -> None:
    killed, dead_folder = _holder(tmp_path, "kill")
    assert killed.wait(timeout=60) == -9
    assert (dead_folder / "records").is_file()  # a SIGKILL runs no clean-up
    live, live_folder = _holder(tmp_path, "hold")
    try:
        with private_scratch("splink", tmp_path) as mine:  # sweeps on the way in
            assert not dead_folder.exists()
            assert (live_folder / "records").is_file()
            assert sweep(tmp_path) == []  # this process's own open folder is live too
            assert mine.is_dir()
    finally:
        assert live.stdin is not None
        live.stdin.close()
        assert live.wait(timeout=60) == 0
    assert not live_folder.exists()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize(("name", "removed"), [
    # Killed before its lock was in place: the pid in the name decides.
    (lambda: f"{PREFIX}splink-{_dead_pid()}-abc", True),
    (lambda: f"{PREFIX}splink-{os.getpid()}-abc", False),
    # Not names this module makes, or not ours to judge.
    (lambda: f"{PREFIX}splink", False),
    (lambda: "cmdm-other-123-abc", False),
], ids=["dead pid", "live pid", "no pid", "another prefix"])
def test_a_folder_without_its_lock_is_judged_by_its_pid(tmp_path: Path, name, removed: bool) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / name()
    folder.mkdir()
    assert sweep(tmp_path) == ([folder] if removed else [])
    assert folder.exists() is not removed


def test_the_sweep_never_follows_a_link(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep").write_text("x")
    link = tmp_path / f"{PREFIX}splink-{_dead_pid()}-abc"
    link.symlink_to(target)
    assert sweep(tmp_path) == []
    assert (target / "keep").is_file() and link.is_symlink()


def test_the_sweep_removes_earlier_versions_folders_unless_a_run_holds_their_database(tmp_path: Path) -> None:
    empty, idle, held = (tmp_path / f"{LEGACY}{name}" for name in ("empty", "idle", "held"))
    for folder in (empty, idle, held):
        folder.mkdir()
    for folder in (idle, held):
        duckdb.connect(str(folder / LEGACY_DATABASE)).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print(flush=True); sys.stdin.read()",
         str(held / LEGACY_DATABASE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "\n"  # the database is open
        assert sorted(sweep(tmp_path)) == [empty, idle]
        assert held.is_dir() and not empty.exists() and not idle.exists()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    assert sweep(tmp_path) == [held]


def test_the_warehouse_spills_into_a_private_folder_beside_it_and_removes_it(tmp_path: Path) -> None:
    from cmdm_pipeline.warehouse import Warehouse

    store = Warehouse(tmp_path / "warehouse.duckdb")
    umask = os.umask(0o022)
    try:
        with store.connect() as con:
            spill = Path(con.sql("SELECT current_setting('temp_directory')").fetchall()[0][0])
            assert spill.parent == tmp_path and spill.name.startswith(f"{PREFIX}warehouse-spill-{os.getpid()}-")
            assert mode(spill) == 0o700
            assert os.umask(0o022) == 0o022  # the run's own files (lenses, reports) keep the user's modes
        assert not spill.exists()
        assert not (tmp_path / "warehouse.duckdb.tmp").exists()
    finally:
        os.umask(umask)
