"""What the study's data is, pinned two ways in the data config. The content (`data.content_sha256`): one hash over
the sorted (relative path, sha256) pairs of the images, checked after extraction and again before the split, so any
packaging of the same images passes (Google's zip, the offline copy, a recompressed one) and a changed, missing or
extra image fails, named from the pinned listing (`data.content_list`). The archive's bytes (`data.archive_sha256`,
optional), checked before anything is extracted. The content hash is `catdog.data.manifests.content_hash`, the data
version's too."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from catdog.common.errors import UserError
from catdog.common.files import sha256_file
from catdog.data.manifests import content_hash

log = logging.getLogger(__name__)
ARCHIVE_SETTING = "data.archive_sha256"
CONTENT_SETTING = "data.content_sha256"
CONF_FILE = "conf/data/cats_and_dogs.yaml"
NAMED = 3  # files a refusal names of each kind before it counts the rest


@dataclass(frozen=True)
class DataPin:
    """What the data config pins: the images' content hash and their listing, and optionally the archive's hash."""

    content_sha256: str | None
    content_list: Path
    archive_sha256: str | None = None

    @classmethod
    def of(cls, data: Any) -> DataPin:
        """The pins of a `data` config group."""
        return cls(data.content_sha256, Path(data.content_list), data.archive_sha256)


class ChecksumError(UserError, RuntimeError):
    """The archive's sha256 is not the pinned one: the message names both hashes and what to do."""

    kind = "download error"


class ContentError(UserError, RuntimeError):
    """The data set's images are not the pinned ones: the message names the files and what to do."""

    kind = "data error"


def dataset_files(dataset_dir: Path, folders: Mapping[str, Iterable[str]]) -> list[str]:
    """Every file the split reads: those in each `<folder>/<class>/` of `folders`, as paths relative to
    `dataset_dir` (a file beside the class folders, such as Google's `vectorize.py`, is not one)."""
    found = []
    for folder, classes in folders.items():
        for cls in classes:
            where = dataset_dir / folder / cls
            if where.is_dir():
                found += [p.relative_to(dataset_dir).as_posix() for p in where.iterdir() if p.is_file()]
    return sorted(found)


def content_pairs(dataset_dir: Path, folders: Mapping[str, Iterable[str]]) -> list[tuple[str, str]]:
    """(relative path, sha256) of every file `dataset_files` lists."""
    files = dataset_files(dataset_dir, folders)
    return [(f, sha256_file(dataset_dir / f)) for f in tqdm(files, desc="hash images", unit="img", disable=None)]


def read_listing(path: Path) -> dict[str, str]:
    """A `listing` file as path → sha256."""
    rows = (line.split("  ", 1) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {name: digest for digest, name in rows}


def named(kind: str, paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:NAMED]) + (f" and {len(paths) - NAMED} more" if len(paths) > NAMED else "")
    return f"{len(paths)} {kind} ({shown})"


def differences(actual: Mapping[str, str], pinned: Mapping[str, str]) -> str:
    """Which files are changed, missing or extra against the pinned listing, a few named per kind."""
    changed = sorted(p for p in actual.keys() & pinned.keys() if actual[p] != pinned[p])
    kinds = {"changed": changed, "missing": sorted(pinned.keys() - actual.keys())}
    kinds["extra"] = sorted(actual.keys() - pinned.keys())
    return ", ".join(named(kind, paths) for kind, paths in kinds.items() if paths)


def check_content(
    dataset_dir: Path,
    folders: Mapping[str, Iterable[str]],
    pinned: str | None,
    listing_file: Path,
    *,
    source: str,
    fix: str,
) -> str:
    """The content hash of the images in `dataset_dir` (which came from `source`), refused unless it is `pinned`
    (None pins nothing: the hash is logged). The refusal names the files that differ from `listing_file`, the
    pinned images' listing, and says what to do (`fix`), then how to study these images instead."""
    pairs = content_pairs(dataset_dir, folders)
    actual = content_hash(pairs)
    if pinned is None:
        log.warning("%s: content hash %s, not checked (%s is null)", source, actual, CONTENT_SETTING)
        return actual
    if actual == pinned.lower():
        return actual
    head = f"{source}: the images are not the ones {CONTENT_SETTING} pins"
    instead = f"or, to study these images, pin them (hash {actual}; docs/configuration.md, `data.content_sha256`)"
    if not listing_file.is_file() or content_hash(read_listing(listing_file).items()) != pinned.lower():
        raise ContentError(
            f"{head}, and {listing_file}, which names the pinned images, is missing or not their listing (restore it "
            f"with git); {fix}; {instead}"
        )
    raise ContentError(f"{head}: {differences(dict(pairs), read_listing(listing_file))}; {fix}; {instead}")


def check_sha256(archive: Path, pinned: str | None, source: str, fix: str) -> str:
    """The sha256 of `archive` (fetched from `source`), refused unless it is `pinned`; None pins nothing (the hash
    is logged). `fix` says what to do about another archive, before the way to trust it."""
    actual = sha256_file(archive)
    if pinned is None:
        log.info("%s: archive sha256 %s, not checked (%s is null)", source, actual, ARCHIVE_SETTING)
        return actual
    if actual != pinned.lower():
        trust = f"if you trust this archive, pin its hash instead (`archive_sha256: {actual}` in {CONF_FILE})"
        raise ChecksumError(
            f"{source}: the archive's sha256 is {actual}, but {ARCHIVE_SETTING} pins {pinned.lower()}: this is not the "
            f"archive the study was made with; {fix}; or, {trust}"
        )
    return actual
