"""Lint and format: ruff's settings in pyproject.toml hold for the whole tree (the pre-commit hooks run the same)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

RUFF = Path(sys.executable).with_name("ruff")


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_the_tree_passes_ruff(command: list[str]) -> None:
    done = subprocess.run(
        [str(RUFF), *command, "--no-cache", "."], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (
        f"ruff {' '.join(command)} failed (fix with `uv run ruff check --fix . && uv run ruff format .`):\n{done.stdout[-3000:]}{done.stderr[-2000:]}"
    )


def test_a_lint_error_fails_the_check(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    (tmp_path / "bad.py").write_text("import os\n")
    done = subprocess.run(
        [str(RUFF), "check", "--no-cache", "."], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and "F401" in done.stdout
