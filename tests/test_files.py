"""Atomic writes: a reader sees the old file or the whole new one, with the mode any `open` would give it."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from catdog.common import files
from catdog.common.files import atomic_path, write_text

# Not the usual 0o022, so a mode that ignores the umask, or hard-codes the common one, shows.
TEST_UMASK = 0o027


@pytest.fixture
def umask() -> Iterator[int]:
    """Set a distinctive umask for the test and give it back afterwards; yields the umask in force."""
    real_umask = os.umask
    previous = real_umask(TEST_UMASK)
    try:
        yield TEST_UMASK
    finally:
        real_umask(previous)


def forbid_umask(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(mask: int) -> int:
        raise AssertionError("os.umask changes the mask for every thread of the process; it must not be called")

    monkeypatch.setattr(os, "umask", refuse)


def test_the_file_gets_the_umask_mode_without_changing_the_umask(
    tmp_path: Path, umask: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_umask(monkeypatch)
    target = tmp_path / "out" / "report.json"
    write_text(target, "{}\n")
    assert target.read_text() == "{}\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_a_failing_block_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "data.csv"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["data.csv"]


def test_the_target_is_replaced_whole_and_at_once(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "model.keras"
    write_text(target, "old")
    new = "x" * (3 * files.CHUNK_BYTES)
    with open(target) as reader:
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".model.keras.") and tmp.suffix == ".keras"
            assert stat.S_IMODE(tmp.stat().st_mode) == 0o666 & ~umask
            tmp.write_text(new)
            assert target.read_text() == "old", "the target must not change before the block ends"
        assert target.read_text() == new
        assert reader.read() == "old", "a reader of the old file must keep seeing all of it"
    assert os.listdir(tmp_path) == ["model.keras"]


def test_a_taken_temporary_name_is_skipped_not_overwritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = iter(["taken", "free"])
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: next(names))
    target = tmp_path / "a.txt"
    squatter = tmp_path / ".a.txt.taken.tmp.txt"
    squatter.write_text("someone else's")
    write_text(target, "mine")
    assert target.read_text() == "mine"
    assert squatter.read_text() == "someone else's"
    assert sorted(os.listdir(tmp_path)) == [".a.txt.taken.tmp.txt", "a.txt"]
