"""The warehouse run lock: one run at a time, the holder named, no stale lock after a kill -9."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cmdm_pipeline.run_lock import WarehouseBusyError, lock_path, run_lock

HOLD = """
import sys
from pathlib import Path
from cmdm_pipeline.run_lock import run_lock
with run_lock(Path(sys.argv[1]), "run-in-child"):
    print("held", flush=True)
    sys.stdin.read()  # hold until killed
"""


def test_a_second_run_is_refused_naming_the_holder(tmp_path: Path) -> None:
    warehouse = tmp_path / "cmdm.duckdb"
    with run_lock(warehouse, "run-a"):
        holder = json.loads(lock_path(warehouse).read_text())
        assert holder["run_id"] == "run-a" and isinstance(holder["pid"], int) and holder["started_at"]
        with pytest.raises(WarehouseBusyError, match=r"in use by run run-a \(pid \d+, started 20"), run_lock(warehouse, "run-b"):
            pytest.fail("a second run got the lock")
        with run_lock(warehouse, "run-a"):  # the same run again (the CLI, then the run's resource): its own lock
            pass
        with pytest.raises(WarehouseBusyError):  # still held after the nested use
            with run_lock(warehouse, "run-b"):
                pass
    with run_lock(warehouse, "run-b"):  # released at the end
        assert json.loads(lock_path(warehouse).read_text())["run_id"] == "run-b"


def test_a_run_killed_with_sigkill_leaves_no_stale_lock(tmp_path: Path) -> None:
    warehouse = tmp_path / "cmdm.duckdb"
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(warehouse)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        with pytest.raises(WarehouseBusyError, match=f"in use by run run-in-child \\(pid {child.pid},"):
            with run_lock(warehouse, "run-b"):
                pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert json.loads(lock_path(warehouse).read_text())["run_id"] == "run-in-child"  # its details stay behind
    with run_lock(warehouse, "run-b"):  # but the kernel released its lock
        pass


def test_a_run_started_by_dagster_takes_the_lock_too(make_project) -> None:  # type: ignore[no-untyped-def]
    import dagster as dg

    from cmdm_pipeline.definitions import JOB_NAME, build_definitions

    config = make_project()
    job = build_definitions(config).resolve_job_def(JOB_NAME)
    with run_lock(config.warehouse_path, "run-from-the-cli"):
        result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not result.success
    errors = [str(e.event_specific_data.error.cause) for e in result.all_events  # type: ignore[union-attr]
              if getattr(e.event_specific_data, "error", None) is not None]
    assert any("in use by run run-from-the-cli" in error for error in errors), errors
    assert not config.warehouse_path.exists()  # refused before anything was written
