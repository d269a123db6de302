"""Stopping a process group: what started it with `start_new_session=True` ends it and all it started."""

from __future__ import annotations

import contextlib
import os
import signal
import time


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
