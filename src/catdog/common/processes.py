"""Processes that end together: stopping a process group (what started it with `start_new_session=True` ends it
and all it started), a sweep's worker that dies with the process that started it, and a stop request (SIGTERM,
SIGHUP) turned into the same interruption as Ctrl-C, so that what a command started is stopped on the way out."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time

# Set for a training command whose parent (a search) must not leave it running: every process of it, a joblib
# sweep's workers included, dies with its parent (Linux's PR_SET_PDEATHSIG).
DIE_WITH_PARENT_ENV = "CATDOG_DIE_WITH_PARENT"
PR_SET_PDEATHSIG = 1


def stop_group(pid: int, grace_s: float = 20) -> None:
    """SIGTERM the process group `pid` leads, SIGKILL it after `grace_s`; a no-op where it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):  # reap it where this process started it
                os.waitpid(pid, os.WNOHANG)
            os.killpg(pid, 0)
            time.sleep(0.2)
        os.killpg(pid, signal.SIGKILL)


def die_with_parent() -> None:
    """Where `DIE_WITH_PARENT_ENV` is set (Linux), get SIGTERM when the parent process dies, and exit now if it
    already did (this process was handed to init)."""
    if not os.environ.get(DIE_WITH_PARENT_ENV) or sys.platform != "linux":
        return
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:
        os._exit(1)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def interrupt_on_stop() -> None:
    """SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread, as Ctrl-C does: `finally` blocks run."""
    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, _interrupt)
