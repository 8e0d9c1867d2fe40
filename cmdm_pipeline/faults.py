"""Named crash points: where the kill -9 tests stop a real run.

A run started with ``CMDM_CRASH_AT=<point>`` in its environment kills itself with SIGKILL when
it reaches that point, exactly as a power cut or the OOM killer would: no ``finally``, no
``atexit``, no flush. The recovery paths (erasure, key rotation, golden write, lens publication,
matching scratch) are tested from those states. Unset, a crash point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "CMDM_CRASH_AT"


def crash_point(name: str) -> None:
    """Die here, without any clean-up, when this run was told to crash at ``name``."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
