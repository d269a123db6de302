"""Secrets and state of the local servers without any engine: secret files written atomically with mode 0600, an
empty one refused by name, state files checked, a recycled pid never signalled, and team_server's command line
answering a mistake in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO

from catdog.team import loopback
from catdog.team import server as team_server
from catdog.team.loopback import (
    SecretFileError,
    StateFileError,
    generated_secret,
    identity,
    stop_recorded,
    write_private,
)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 0: a mode of 0600 must come from the code, not from the process's umask."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen]:
    """A live process in a session of its own that a wrong stop could kill."""
    process = subprocess.Popen(["sleep", "300"], start_new_session=True)
    deadline = time.monotonic() + 10
    while (identity(process.pid) or {}).get("cmdline") != ["sleep", "300"] and time.monotonic() < deadline:
        time.sleep(0.01)  # between fork and exec, /proc shows the child with an empty command line
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def cli(*args: str) -> subprocess.CompletedProcess:
    """`python src/team_server.py ARGS` as a user runs it."""
    return subprocess.run(
        [sys.executable, str(REPO / "src" / "team_server.py"), *args], capture_output=True, text=True, timeout=60
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("team server error: ")
    return lines[0]


def test_a_generated_secret_is_0600_from_its_first_byte_and_kept(
    tmp_path: Path, open_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "new" / "secret"
    seen = []
    real_replace = os.replace

    def replace(src, dst):  # what exists just before the rename makes it the secret
        seen.append((mode(Path(src)), Path(src).read_text()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    value = generated_secret(target)
    assert len(value) >= 24
    assert seen == [(0o600, value)]  # complete and private before it has the secret's name
    assert mode(target) == 0o600
    assert os.listdir(target.parent) == ["secret"]  # no temporary file left
    assert generated_secret(target) == value  # generated once


def test_a_write_that_fails_before_the_rename_leaves_no_secret_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "folder" / "secret"

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        generated_secret(target)
    assert os.listdir(target.parent) == []  # neither an empty secret nor the temporary file
    monkeypatch.undo()
    assert generated_secret(target)  # the next start generates one


@pytest.mark.parametrize("content", ["", " \n\t\n"])
def test_an_empty_secret_file_is_an_error_naming_it_and_is_left_alone(tmp_path: Path, content: str) -> None:
    target = tmp_path / "postgres.password"
    target.write_text(content)
    with pytest.raises(SecretFileError, match=f"the secret file {target} is empty.*delete it"):
        generated_secret(target)
    assert target.read_text() == content


def test_write_private_replaces_a_world_readable_file_with_a_0600_one(tmp_path: Path, open_umask: None) -> None:
    target = tmp_path / "basic_auth.ini"
    target.write_text("old")
    target.chmod(0o644)
    write_private(target, "database_uri = postgresql://mlflow:pw@127.0.0.1/x\n")
    assert mode(target) == 0o600 and target.read_text().startswith("database_uri")


def test_a_folder_start_creates_is_private_and_an_existing_one_keeps_its_mode(tmp_path: Path, open_umask: None) -> None:
    created = tmp_path / "a" / "team"
    team_server.prepare_folder(created)
    assert mode(created) == (0o711 if os.geteuid() == 0 else 0o700)  # as root the postgres user only passes through
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    team_server.prepare_folder(existing)
    assert mode(existing) == 0o755


def test_start_refuses_a_folder_others_may_write_to_in_one_line_and_leaves_its_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    line = one_line_error(cli("start", "--folder", str(shared)))
    assert f"{shared} is writable by other users (mode 0o777)" in line and "chmod go-w" in line
    assert mode(shared) == 0o777 and os.listdir(shared) == []


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", '{"server": "12"}', '{"server": {"pid": 1}}'])
def test_stop_with_an_empty_or_corrupt_state_file_says_so_in_one_line(tmp_path: Path, content: str) -> None:
    state = tmp_path / team_server.STATE
    state.write_text(content)
    with pytest.raises(StateFileError):
        team_server.stop(tmp_path)
    line = one_line_error(cli("stop", "--folder", str(tmp_path)))
    assert f"the state file {state} is" in line and "delete it" in line
    assert state.read_text() == content


def test_stop_with_nothing_running_says_so_in_one_line(tmp_path: Path) -> None:
    line = one_line_error(cli("stop", "--folder", str(tmp_path)))
    assert f"no team server runs from {tmp_path}" in line


@pytest.mark.parametrize("differs", ["starttime", "cmdline"])
def test_stop_does_not_signal_a_recycled_pid(tmp_path: Path, sleeper: subprocess.Popen, differs: str) -> None:
    recorded = identity(sleeper.pid)
    assert recorded["cmdline"] == ["sleep", "300"]
    recorded[differs] = recorded["starttime"] - 1 if differs == "starttime" else ["python", "-m", "mlflow", "server"]
    state = {"uri": "http://127.0.0.1:1", "server": recorded, "postgres": "", "artifacts": ""}
    (tmp_path / team_server.STATE).write_text(json.dumps(state))
    result = cli("stop", "--folder", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert sleeper.poll() is None  # still alive
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"pid {sleeper.pid} is not the mlflow server recorded here any more (it runs 'sleep 300'")
    assert not (tmp_path / team_server.STATE).exists()  # the stale record is gone


def test_a_recorded_process_that_is_still_ours_is_stopped_with_its_group(sleeper: subprocess.Popen) -> None:
    assert stop_recorded(identity(sleeper.pid), "test server", grace_s=5)
    assert sleeper.poll() is not None  # gone (stop_group reaped it: it is this process's child)
    assert identity(sleeper.pid) is None
    assert loopback.stop_recorded({"pid": sleeper.pid, "cmdline": [], "starttime": 0}, "gone")  # nothing to stop


def test_add_user_mistakes_are_one_line(tmp_path: Path) -> None:
    line = one_line_error(cli("add-user", "--folder", str(tmp_path)))
    assert "add-user needs a username" in line
    line = one_line_error(cli("add-user", "../evil", "--folder", str(tmp_path)))
    assert "'../evil' is not a username here" in line
    line = one_line_error(cli("add-user", "bob", "--folder", str(tmp_path)))
    assert f"no team server runs from {tmp_path}" in line and "start it first" in line
    assert not (tmp_path / "users").exists()


def test_stop_does_not_signal_the_pid_of_a_state_file_without_a_start_time(
    tmp_path: Path, sleeper: subprocess.Popen
) -> None:
    (tmp_path / team_server.STATE).write_text(json.dumps({"uri": "http://127.0.0.1:1", "pid": sleeper.pid}))
    result = cli("stop", "--folder", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert sleeper.poll() is None
    assert (
        result.stderr.strip()
        == f"{tmp_path / team_server.STATE} records no start time for pid {sleeper.pid}; not signalling it"
    )
