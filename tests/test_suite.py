"""The suite's own guards: a process a test leaves running fails the session (and is stopped), and a test that
needs a missing engine skips, or fails where CI installed the engines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.slow  # each test runs a pytest of its own


def run_inner(pytester: pytest.Pytester, test: str, **env: str) -> subprocess.CompletedProcess:
    """A pytest session with this suite's conftest over one test file; its exit code and output."""
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text())
    pytester.makepyfile(test_inner=test)
    environ = {k: v for k, v in os.environ.items() if k != "CATDOG_TEST_SESSION"}
    environ.update(PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO / "src")]), **env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-rs", str(pytester.path)],
        cwd=pytester.path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_process_left_running_fails_the_session_and_is_stopped(pytester: pytest.Pytester) -> None:
    pid_file = pytester.path / "leaked.pid"
    done = run_inner(
        pytester,
        "import os, subprocess\n"
        "def test_leaks():\n"
        "    proc = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        "    open(os.environ['PID_FILE'], 'w').write(str(proc.pid))\n",
        PID_FILE=str(pid_file),
    )
    assert done.returncode == 1, done.stdout[-2000:]
    assert "1 passed" in done.stdout and "still running" in done.stdout and "sleep 300" in done.stdout
    stat = Path("/proc", pid_file.read_text(), "stat")
    assert not stat.exists() or stat.read_text().split()[2] == "Z", "the leaked process was not stopped"


def test_a_session_that_stops_what_it_started_passes(pytester: pytest.Pytester) -> None:
    done = run_inner(
        pytester,
        "import subprocess\n"
        "def test_tidy():\n"
        "    proc = subprocess.Popen(['sleep', '300'])\n"
        "    proc.kill(); proc.wait()\n",
    )
    assert done.returncode == 0, done.stdout[-2000:]


@pytest.mark.parametrize(("strict", "code", "word"), [("0", 0, "SKIPPED"), ("1", 1, "ERROR")])
def test_a_missing_engine_skips_or_fails_where_ci_installed_them(
    pytester: pytest.Pytester, strict: str, code: int, word: str
) -> None:
    done = run_inner(
        pytester,
        "import pytest\n@pytest.mark.requires('imagenet')\ndef test_needs_weights():\n    pass\n",
        KERAS_HOME=str(pytester.path / "empty-keras-home"),
        CATDOG_REQUIRE_ENGINES=strict,
    )
    assert done.returncode == code, done.stdout[-2000:]
    assert word in done.stdout and "ImageNet weights not in Keras' cache" in done.stdout
