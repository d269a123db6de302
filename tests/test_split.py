"""The split stage: deterministic, stratified, disjoint manifests; unreadable files listed, never dropped silently."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from catdog.split import data_report, make_split, read_manifest
from conftest import TINY_COUNTS, expected_overrides, jpeg_bytes, make_dataset, run_entry

CLASSES = ["cats", "dogs"]


def split(dataset: Path, out: Path, seed: int = 0, fraction: float = 0.5):
    return make_split(dataset, out, CLASSES, "train", "validation", fraction, seed)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "raw")


def test_same_seed_same_bytes_other_seed_other_split(dataset: Path, tmp_path: Path) -> None:
    split(dataset, tmp_path / "a")
    split(dataset, tmp_path / "b")
    split(dataset, tmp_path / "c", seed=1)
    for name in ("train", "val", "test"):
        assert (tmp_path / "a" / f"{name}.csv").read_bytes() == (tmp_path / "b" / f"{name}.csv").read_bytes()
    assert (tmp_path / "a" / "test.csv").read_bytes() != (tmp_path / "c" / "test.csv").read_bytes()


def test_the_training_seed_leaves_the_split_alone(tmp_path: Path) -> None:
    make_dataset(tmp_path / "data" / "raw")

    def holdout(*overrides: str) -> dict[str, bytes]:
        result = run_entry("split.py", *expected_overrides(), *overrides, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return {name: (tmp_path / "data" / "split" / f"{name}.csv").read_bytes() for name in ("val", "test")}

    first = holdout("seed=1")
    assert holdout("seed=2") == first
    assert holdout("data.split_seed=1") != first


def test_stratified_and_disjoint(dataset: Path, tmp_path: Path) -> None:
    splits, rejects = split(dataset, tmp_path / "s", fraction=0.25)
    assert rejects == []
    per_class = TINY_COUNTS["validation"]
    for cls in CLASSES:
        assert sum(e.label == cls for e in splits["train"]) == TINY_COUNTS["train"]
        assert sum(e.label == cls for e in splits["test"]) == round(per_class * 0.25)
        assert sum(e.label == cls for e in splits["val"]) == per_class - round(per_class * 0.25)
    paths = [{e.path for e in entries} for entries in splits.values()]
    hashes = [{e.sha256 for e in entries} for entries in splits.values()]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not paths[i] & paths[j]
            assert not hashes[i] & hashes[j]
    assert all(e.path.startswith("train/") for e in splits["train"])
    assert all(e.path.startswith("validation/") for e in splits["val"] + splits["test"])


def test_manifest_round_trip(dataset: Path, tmp_path: Path) -> None:
    splits, _ = split(dataset, tmp_path / "s")
    assert read_manifest(tmp_path / "s" / "test.csv") == splits["test"]
    header = (tmp_path / "s" / "test.csv").read_text().splitlines()[0]
    assert header == "path,label,sha256"


def test_corrupt_jpeg_and_stray_file_are_rejected_and_listed(dataset: Path, tmp_path: Path) -> None:
    good = jpeg_bytes((1, 2, 3), seed=99)
    (dataset / "train" / "cats" / "broken.jpg").write_bytes(good[: len(good) // 3])
    (dataset / "validation" / "dogs" / "notes.txt").write_text("not an image")
    (dataset / "validation" / "dogs" / "fake.jpg").write_bytes(b"\x00" * 100)
    splits, rejects = split(dataset, tmp_path / "s")
    rejected = {r.path: r.reason for r in rejects}
    assert set(rejected) == {"train/cats/broken.jpg", "validation/dogs/notes.txt", "validation/dogs/fake.jpg"}
    assert all("not a readable image" in reason for reason in rejected.values())
    kept = {e.path for entries in splits.values() for e in entries}
    assert not kept & set(rejected)
    with open(tmp_path / "s" / "rejects.csv", newline="") as handle:
        assert {row["path"] for row in csv.DictReader(handle)} == set(rejected)


def test_a_holdout_copy_of_a_train_image_is_rejected(dataset: Path, tmp_path: Path) -> None:
    source = sorted((dataset / "train" / "cats").iterdir())[0]
    shutil.copy(source, dataset / "validation" / "cats" / "copy.jpg")
    splits, rejects = split(dataset, tmp_path / "s")
    assert [r.path for r in rejects] == ["validation/cats/copy.jpg"]
    assert "same bytes as train/cats/" in rejects[0].reason
    assert "validation/cats/copy.jpg" not in {e.path for e in splits["val"] + splits["test"]}


def test_report_counts_and_majority_baseline(dataset: Path, tmp_path: Path) -> None:
    next((dataset / "train" / "dogs").iterdir()).unlink()
    splits, rejects = split(dataset, tmp_path / "s")
    report = data_report(splits, CLASSES, len(rejects))
    assert report["counts"]["train"] == {"cats": TINY_COUNTS["train"], "dogs": TINY_COUNTS["train"] - 1}
    assert report["majority_class"] == "cats"
    assert report["test_majority_accuracy"] == 0.5


def test_missing_data_set_says_which_stage_to_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dvc repro download"):
        split(tmp_path / "absent", tmp_path / "s")
