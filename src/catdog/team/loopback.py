"""What the local servers (catdog.team.postgres, catdog.team.swift, catdog.team.server) share: free ports on 127.0.0.1, secret files
written atomically with mode 0600, waiting for a server to answer, and stopping a recorded server's process group
only while its pid is still that server."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from catdog.common.errors import UserError
from catdog.common.processes import stop_group


class SecretFileError(UserError):
    """A secret file exists but holds no secret: the message names it and what to do."""

    kind = "team server error"


class ServerStartError(UserError):
    """A local server did not start or its folder holds another setup: the message says which and where its log is."""

    kind = "team server error"


class StateFileError(UserError):
    """A server's state file cannot be read: the message names it and what to do."""

    kind = "team server error"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def private_dir(path: Path, mode: int = 0o700) -> Path:
    """Create `path` (and missing parents) with `mode`; an existing folder keeps the mode its owner gave it."""
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700)
        path.chmod(mode)  # the umask may have taken bits `mode` asks for (the traversal bit for postgres)
    return path


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically with mode 0600: a temporary file opened 0600, fsynced, renamed onto it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def generated_secret(path: Path, nbytes: int = 18) -> str:
    """The secret in `path`, generated there (0600, atomically) the first time; an empty one is an error."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, secrets.token_urlsafe(nbytes))
    value = path.read_text().strip()
    if not value:
        raise SecretFileError(
            f"the secret file {path} is empty (an interrupted write?); put the secret the servers were set up "
            "with back in it, or delete it to generate a new one on a fresh setup"
        )
    return value


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
    raise ServerStartError(
        f"{what} ({url}) {status}; its log ({log}):\n{log.read_text()[-3000:] if log.exists() else '(none)'}"
    )


def identity(pid: int) -> dict | None:
    """What tells process `pid` apart from a later one with the same pid: its argv and start time (in clock ticks
    after boot, /proc/<pid>/stat field 22); None where no such process runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces: field 3 on
    if fields[0] == "Z":  # exited, not yet reaped by its parent: gone for what matters here
        return None
    return {"pid": pid, "cmdline": cmdline.decode(errors="replace").split("\0")[:-1], "starttime": int(fields[19])}


def read_state(path: Path) -> dict | None:
    """A server's JSON state file, None where there is none; an empty or corrupt one is a StateFileError."""
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        state, why = None, f"not JSON ({exc})"
    else:
        why = "not a JSON object"
    if not isinstance(state, dict):
        raise StateFileError(
            f"the state file {path} is {why}; check that no server it started still runs (ps), then delete it"
        )
    return state


def checked_record(record: object, path: Path) -> dict | None:
    """`record` if it is identity()'s record of a process (or None), else a StateFileError naming `path`."""
    if record is None or (isinstance(record, dict) and {"pid", "cmdline", "starttime"} <= record.keys()):
        return record
    raise StateFileError(
        f"the state file {path} is corrupt (a process record reads {str(record)[:60]!r}); check that no server it "
        "started still runs (ps), then delete it"
    )


def stop_recorded(recorded: dict, what: str, grace_s: float = 20) -> bool:
    """Stop the process group of the process `recorded` (identity()'s record) if that pid still is that process;
    else say so in one line on stderr and signal nothing. True where it stopped (or found gone) the process."""
    now = identity(recorded["pid"])
    if now is None:
        return True
    if now != recorded:
        print(
            f"pid {recorded['pid']} is not the {what} recorded here any more (it runs "
            f"{' '.join(now['cmdline'])[:80]!r}, started at tick {now['starttime']}); not signalling it",
            file=sys.stderr,
        )
        return False
    stop_group(recorded["pid"], grace_s)
    return True
