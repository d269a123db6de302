"""What the local servers (catdog.pg, catdog.swift, catdog.team_server) share: free ports on 127.0.0.1, secrets
generated once into 0600 files, waiting for a server to answer, and stopping a server with its whole process group."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generated_secret(path: Path, nbytes: int = 18) -> str:
    """The secret in `path`, generated there (readable by its owner only) the first time."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(nbytes))
    return path.read_text().strip()


def wait_http(url: str, process: subprocess.Popen, log: Path, what: str, timeout_s: float) -> None:
    """Return once `url` answers (any HTTP status); raise with the tail of `log` if `process` exits or time runs
    out first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.3)
    status = (
        f"exited with {process.returncode}" if process.poll() is not None else f"did not answer in {timeout_s:.0f} s"
    )
    raise RuntimeError(
        f"{what} ({url}) {status}; its log ({log}):\n{log.read_text()[-3000:] if log.exists() else '(none)'}"
    )


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
