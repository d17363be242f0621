"""Named crash points for the exactly-once tests.

A test runs the loader in a subprocess with `ERP_SYNC_CRASH_AT=<name>`; when the loader reaches that
point the process kills itself with SIGKILL (no cleanup, no atexit, no rollback sent), which is the
harshest way a worker can die. Without the variable every call is a cheap no-op.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "ERP_SYNC_CRASH_AT"
CRASH_POINTS = ("before_copy", "during_copy", "before_commit", "after_commit_before_ledger")


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL when `ERP_SYNC_CRASH_AT` names this point."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
