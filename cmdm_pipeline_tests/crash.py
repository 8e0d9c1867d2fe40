"""Run ``cmdm run`` in a child process, optionally killed with SIGKILL at a named crash point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from cmdm_pipeline.faults import ENV


def cmdm(config_path: Path, *args: str, crash_at: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``cmdm <args> --config <config_path>`` as a user would run it (its own process, the
    project folder as working directory); with ``crash_at``, the process must die by SIGKILL
    at that point, or the test fails (a crash point the run never reaches tests nothing)."""
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if crash_at is not None:
        env[ENV] = crash_at
    done = subprocess.run(
        [sys.executable, "-m", "cmdm_pipeline.cli", *args, "--config", str(config_path)],
        cwd=config_path.parent, env=env, capture_output=True, text=True, timeout=timeout,
    )
    if crash_at is not None:
        assert done.returncode == -signal.SIGKILL, (
            f"expected a SIGKILL at {crash_at}, got rc {done.returncode}:\n{done.stderr[-2000:]}")
    return done
