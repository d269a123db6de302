"""Fixed, seeded, stratified train/val/test manifests, with the images that could not be read, and those params.yaml
excludes, listed apart."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from catdog.common.files import sha256_file
from catdog.data.checksums import DataPin, check_content
from catdog.data.manifests import MANIFEST_FIELDS, Entry, class_counts, majority_class, write_csv, write_settings
from catdog.data.require import DataMissing
from catdog.settings.checks import ConfigError

ACCEPTED_FORMATS = ("JPEG", "PNG")


@dataclass(frozen=True)
class Reject:
    path: str
    reason: str


@dataclass(frozen=True)
class Exclusion:
    """A file the study leaves out (`data.exclude` in params.yaml) and why."""

    path: str
    reason: str


def exclude(
    splits: dict[str, list[Entry]], exclusions: Sequence[Exclusion], known: set[str], dataset_dir: Path
) -> tuple[dict[str, list[Entry]], list[Reject]]:
    """`splits` without the excluded files, and a reject for each; a path not in the data set is refused."""
    unknown = [x.path for x in exclusions if x.path not in known]
    if unknown:
        raise ConfigError(
            f"data.exclude in params.yaml: {', '.join(unknown)} not in the data set {dataset_dir}; give each path "
            "as data/split/*.csv lists it (`train/cats/cat.1.jpg`), or remove the entry. Nothing was written."
        )
    reasons = {x.path: x.reason for x in exclusions}
    kept = {name: [e for e in entries if e.path not in reasons] for name, entries in splits.items()}
    return kept, [Reject(path, f"excluded (data.exclude): {reason}") for path, reason in reasons.items()]


def inspect_image(path: Path) -> str | None:
    """Why `path` cannot serve as a training image, or None when it decodes fully."""
    try:
        with Image.open(path) as image:
            if image.format not in ACCEPTED_FORMATS:
                return f"format {image.format} is not one of {', '.join(ACCEPTED_FORMATS)}"
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"not a readable image: {exc}"
    return None


def scan(dataset_dir: Path, folder: str, classes: Sequence[str]) -> tuple[list[Entry], list[Reject]]:
    """Decode every file under `<folder>/<class>/` once; keep the readable images, list the rest."""
    entries: list[Entry] = []
    rejects: list[Reject] = []
    files = [(cls, p) for cls in classes for p in sorted((dataset_dir / folder / cls).iterdir()) if p.is_file()]
    for cls, path in tqdm(files, desc=f"check {folder}", unit="img", disable=None):
        rel = path.relative_to(dataset_dir).as_posix()
        reason = inspect_image(path)
        if reason:
            rejects.append(Reject(rel, reason))
        else:
            entries.append(Entry(rel, cls, sha256_file(path)))
    return entries, rejects


def drop_cross_split_duplicates(train: list[Entry], holdout: list[Entry]) -> tuple[list[Entry], list[Reject]]:
    """Remove from the hold-out any image whose bytes already sit in train (or earlier in the hold-out)."""
    seen = {e.sha256: e.path for e in train}
    kept: list[Entry] = []
    rejects: list[Reject] = []
    for entry in holdout:
        if entry.sha256 in seen:
            rejects.append(Reject(entry.path, f"same bytes as {seen[entry.sha256]}"))
        else:
            seen[entry.sha256] = entry.path
            kept.append(entry)
    return kept, rejects


def stratified_split(entries: list[Entry], test_fraction: float, seed: int) -> tuple[list[Entry], list[Entry]]:
    """Split `entries` into (val, test) keeping the class balance; the same seed gives the same split."""
    rng = random.Random(seed)
    val: list[Entry] = []
    test: list[Entry] = []
    for label in sorted({e.label for e in entries}):
        group = sorted((e for e in entries if e.label == label), key=lambda e: e.path)
        rng.shuffle(group)
        n_test = round(len(group) * test_fraction)
        test.extend(group[:n_test])
        val.extend(group[n_test:])
    return sorted(val, key=lambda e: e.path), sorted(test, key=lambda e: e.path)


def safe_test_fractions(holdout_counts: dict[str, int], min_per_class: int) -> tuple[float, float] | None:
    """The closed range of test fractions that leaves every class at least `min_per_class` images in val and in test.

    `stratified_split` puts `round(n * f)` of a class's `n` images in test: `m/n <= f <= (n - m)/n` keeps both
    sides at `m` or more, and the smallest class bounds it. The bounds are rounded inwards to three decimals, so
    each printed end works too. None when no fraction can work.
    """
    smallest = min(holdout_counts.values(), default=0)
    if smallest < 2 * min_per_class:
        return None
    low = math.ceil(1000 * min_per_class / smallest) / 1000
    high = math.floor(1000 * (smallest - min_per_class) / smallest) / 1000
    return (low, high) if low <= high else None


def check_holdout(
    val: Sequence[Entry], test: Sequence[Entry], classes: Sequence[str], test_fraction: float, min_per_class: int
) -> None:
    """Refuse a split that leaves any class fewer than `min_per_class` images in val or in test."""
    val_counts, test_counts = class_counts(val, classes), class_counts(test, classes)
    if all(min(val_counts[c], test_counts[c]) >= min_per_class for c in classes):
        return
    holdout = {c: val_counts[c] + test_counts[c] for c in classes}
    allowed = safe_test_fractions(holdout, min_per_class)
    if allowed is None:
        fix = (
            f"No fraction can work: the smallest class has {min(holdout.values())} hold-out images and needs at least "
            f"{2 * min_per_class}; lower data.min_holdout_per_class"
        )
    else:
        fix = (
            f"For this data (hold-out images per class: {holdout}) set data.test_fraction from {allowed[0]} to "
            f"{allowed[1]}, or lower data.min_holdout_per_class"
        )
    raise ConfigError(
        f"data.test_fraction: got {test_fraction!r}, which would split the hold-out into val {val_counts} and "
        f"test {test_counts}; each class needs at least {min_per_class} (data.min_holdout_per_class) in val and in "
        f"test. {fix}. Nothing was written."
    )


def data_report(
    splits: dict[str, list[Entry]], classes: Sequence[str], n_rejects: int, n_excluded: int = 0
) -> dict[str, object]:
    """Class counts per split, the files rejected (of them, excluded in params.yaml), and the accuracy of always
    guessing the train split's majority class."""
    counts = {name: class_counts(entries, classes) for name, entries in splits.items()}
    majority = majority_class(splits["train"], classes)
    report: dict[str, object] = {"counts": counts, "rejected": n_rejects, "majority_class": majority}
    report["excluded"] = n_excluded
    for name, entries in splits.items():
        report[f"{name}_majority_accuracy"] = round(counts[name][majority] / max(len(entries), 1), 4)
    return report


def make_split(
    dataset_dir: Path,
    split_dir: Path,
    classes: Sequence[str],
    train_folder: str,
    holdout_folder: str,
    test_fraction: float,
    seed: int,
    *,
    min_holdout_per_class: int,
    pin: DataPin | None = None,
    exclusions: Sequence[Exclusion] = (),
) -> tuple[dict[str, list[Entry]], list[Reject]]:
    """Write `<split_dir>/{train,val,test}.csv`, `rejects.csv` and the settings that drew them (`split.json`);
    return the splits and the rejects.

    The images are first checked against `pin`'s content hash (`catdog.data.checksums`; None: not checked). The
    `exclusions` leave after val and test are drawn, so excluding a file moves no other between them. A split
    leaving any class fewer than `min_holdout_per_class` images in val or in test raises ConfigError before any file
    is written.
    """
    for folder in [dataset_dir] + [dataset_dir / f / c for f in (train_folder, holdout_folder) for c in classes]:
        if not folder.is_dir():
            why = "the data set is not downloaded" if folder == dataset_dir else "missing from the data set"
            raise DataMissing(
                f"{folder.absolute()} not found ({why}); fetch the data set with `dvc repro download` "
                "(or `python src/download.py`), then split it"
            )
    if pin is not None:
        folders = {folder: classes for folder in (train_folder, holdout_folder)}
        again = "the data set changed after its download: fetch it again with `dvc repro -f download`, then split it"
        check_content(dataset_dir, folders, pin.content_sha256, pin.content_list, source=str(dataset_dir), fix=again)
    train, train_rejects = scan(dataset_dir, train_folder, classes)
    holdout, holdout_rejects = scan(dataset_dir, holdout_folder, classes)
    scanned = {e.path for e in train + holdout + train_rejects + holdout_rejects}
    holdout, duplicate_rejects = drop_cross_split_duplicates(train, holdout)
    val, test = stratified_split(holdout, test_fraction, seed)
    splits, excluded = exclude({"train": train, "val": val, "test": test}, exclusions, scanned, dataset_dir)
    check_holdout(splits["val"], splits["test"], classes, test_fraction, min_holdout_per_class)
    for name, entries in splits.items():
        write_csv(split_dir / f"{name}.csv", MANIFEST_FIELDS, entries)
    rejects = train_rejects + holdout_rejects + duplicate_rejects + excluded
    write_csv(split_dir / "rejects.csv", ("path", "reason"), rejects)
    write_settings(split_dir, seed, test_fraction)
    return splits, rejects
