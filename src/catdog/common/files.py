"""Atomic file writes and content hashes: a reader never sees a half-written file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from catdog.common.errors import UserError

CHUNK_BYTES = 1 << 20
FILE_MODE = 0o666
TEMP_ATTEMPTS = 100


def _create_temp(target: Path) -> Path:
    """A new, empty file beside `target` under a random name, created with FILE_MODE so that the kernel applies
    the process umask itself (reading the umask would mean changing it, under every other thread's feet)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(TEMP_ATTEMPTS):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp{target.suffix}")
        try:
            os.close(os.open(tmp, flags, FILE_MODE))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(
        f"{target.parent}: no free temporary name for {target.name} after {TEMP_ATTEMPTS} tries; "
        f"remove stale .{target.name}.*.tmp{target.suffix} files there"
    )


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds.

    The file ends with mode `0o666 & ~umask`, like any file the process creates with `open`.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_temp(target)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


class StudyFileMissing(UserError):
    """A file a stage reads is not there: the stage that writes it has not run here, nor was its output pulled."""

    kind = "missing input"


def required(path: str | os.PathLike[str], stage: str) -> Path:
    """`path`, or an error naming it and the stage that writes it: the one check of every file a stage reads."""
    path = Path(path)
    if not path.is_file():
        raise StudyFileMissing(f"{path} not found; run `dvc repro {stage}` (or `dvc pull` a study that has it)")
    return path


def read_json(path: str | os.PathLike[str], stage: str) -> Any:
    """The JSON file at `path`, which stage `stage` writes (`required`)."""
    return json.loads(required(path, stage).read_text(encoding="utf-8"))


def write_text(target: str | os.PathLike[str], text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: str | os.PathLike[str], data: Any) -> None:
    write_text(target, json.dumps(data, indent=2, sort_keys=True) + "\n")


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_files(paths: list[Path]) -> str:
    """One hash over several files' contents, in the given order."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()
