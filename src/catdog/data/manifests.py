"""The split as files: manifests (path, label, sha256), the settings that drew them, and the data version."""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from catdog.common.files import atomic_path, read_json, required, write_json
from catdog.settings.checks import ConfigError

SPLITS = ("train", "val", "test")
MANIFEST_FIELDS = ("path", "label", "sha256")
SETTINGS_FILE = "split.json"


@dataclass(frozen=True)
class Entry:
    path: str
    label: str
    sha256: str


def write_csv(path: Path, fields: Sequence[str], rows: Sequence[object]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(fields)
    writer.writerows([getattr(row, f) for f in fields] for row in rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")


def read_manifest(path: Path) -> list[Entry]:
    with open(required(path, "split"), newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != MANIFEST_FIELDS:
            raise ValueError(f"{path}: expected columns {MANIFEST_FIELDS}, found {reader.fieldnames}")
        return [Entry(row["path"], row["label"], row["sha256"]) for row in reader]


def class_counts(entries: Sequence[Entry], classes: Sequence[str]) -> dict[str, int]:
    counts = Counter(e.label for e in entries)
    return {cls: counts.get(cls, 0) for cls in classes}


def majority_class(entries: Sequence[Entry], classes: Sequence[str]) -> str:
    """The most common class in `entries` (ties go to the class listed first)."""
    counts = class_counts(entries, classes)
    return max(classes, key=lambda c: (counts[c], -list(classes).index(c)))


def listing(pairs: Iterable[tuple[str, str]]) -> str:
    """`sha256sum`'s format, one `<sha256>  <path>` line per (path, sha256) pair, sorted by path."""
    return "".join(f"{digest}  {path}\n" for path, digest in sorted(pairs))


def content_hash(pairs: Iterable[tuple[str, str]]) -> str:
    """The sha256 of the pairs' `listing`: the same files with the same bytes, the same hash, however packed."""
    return hashlib.sha256(listing(pairs).encode()).hexdigest()


def data_version(split_dir: Path) -> str:
    """The content hash (the data set's own, `catdog.data.checksums`) of the images the split's manifests
    list, each path prefixed with its split and label: the same images in the same splits, the same data version;
    an excluded image or another draw of val and test, another one."""
    pairs = [
        (f"{name}:{e.label}:{e.path}", e.sha256) for name in SPLITS for e in read_manifest(split_dir / f"{name}.csv")
    ]
    return content_hash(pairs)[:16]


def write_settings(split_dir: Path, seed: int, test_fraction: float) -> None:
    """Record beside the manifests the knobs that drew them, so a run can tell which split it trains on."""
    write_json(split_dir / SETTINGS_FILE, {"split_seed": seed, "test_fraction": test_fraction})


def check_split_settings(data: DictConfig) -> str:
    """The data version of the split in `data.split_dir`, after checking it was drawn with this config's
    `data.split_seed` and `data.test_fraction`; a run never trains on another split than it logs."""
    split_dir = Path(data.split_dir)
    path = split_dir / SETTINGS_FILE
    recorded = read_json(path, "split")
    for knob in ("split_seed", "test_fraction"):
        if recorded[knob] != data[knob]:
            raise ConfigError(
                f"data.{knob}: this run says {data[knob]!r} but {split_dir} was drawn with {recorded[knob]!r}; "
                f"re-split with `python src/split.py data.{knob}={data[knob]}`, or drop the override"
            )
    return data_version(split_dir)
