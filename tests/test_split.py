"""The split stage: deterministic, stratified, disjoint manifests; unreadable files listed, never dropped silently;
images checked against the content pin first; the data version."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import TINY_COUNTS, expected_overrides, jpeg_bytes, make_dataset, run_entry

from catdog.data.checksums import ContentError, DataPin, content_pairs
from catdog.data.manifests import content_hash, data_version, listing, read_manifest
from catdog.data.require import DataMissing
from catdog.data.split import data_report, make_split
from catdog.settings.checks import ConfigError

CLASSES = ["cats", "dogs"]


# The tiny data set is not the one the data config pins, nor holds the files params.yaml excludes: the split stage
# runs on it unpinned, excluding nothing.
UNPINNED = ("data.content_sha256=null", "data.exclude=[]")
# The tiny hold-out has 8 images per class; at least 2 in val and in test allows test fractions 0.25 to 0.75.
MIN_HOLDOUT = 2


def split(dataset: Path, out: Path, seed: int = 0, fraction: float = 0.5, min_holdout: int = MIN_HOLDOUT):
    return make_split(dataset, out, CLASSES, "train", "validation", fraction, seed, min_holdout_per_class=min_holdout)


def snapshot(*folders: Path) -> dict[Path, tuple[bytes, int]]:
    """Every file under `folders` with its bytes and modification time."""
    files = [p for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()]
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


def allowed_range(message: str) -> tuple[float, float]:
    found = re.search(r"set data\.test_fraction from ([0-9.]+) to ([0-9.]+)", message)
    assert found, f"no allowed range in: {message}"
    return float(found[1]), float(found[2])


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


@pytest.mark.slow
def test_the_training_seed_leaves_the_split_alone(tmp_path: Path) -> None:
    make_dataset(tmp_path / "data" / "raw")

    def holdout(*overrides: str) -> dict[str, bytes]:
        result = run_entry("split.py", *UNPINNED, *expected_overrides(), *overrides, cwd=tmp_path)
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
    with pytest.raises(DataMissing, match="dvc repro download"):
        split(tmp_path / "absent", tmp_path / "s")


@pytest.mark.parametrize(
    ("fraction", "val", "test"),
    [(0.999, {"cats": 0, "dogs": 0}, {"cats": 8, "dogs": 8}), (0.1, {"cats": 7, "dogs": 7}, {"cats": 1, "dogs": 1})],
)
def test_a_fraction_starving_val_or_test_fails_before_writing(
    dataset: Path, tmp_path: Path, fraction: float, val: dict[str, int], test: dict[str, int]
) -> None:
    out = tmp_path / "s"
    split(dataset, out)
    before = snapshot(out)
    with pytest.raises(ConfigError) as failure:
        split(dataset, out, fraction=fraction)
    message = str(failure.value)
    assert message.startswith(f"data.test_fraction: got {fraction}")
    assert f"val {val}" in message and f"test {test}" in message
    assert "at least 2 (data.min_holdout_per_class)" in message
    assert allowed_range(message) == (0.25, 0.75)
    assert snapshot(out) == before


def test_every_fraction_in_the_stated_range_works(dataset: Path, tmp_path: Path) -> None:
    for path in sorted((dataset / "validation" / "dogs").iterdir())[:2]:
        path.unlink()  # classes of 8 and 6: the smaller one bounds the range
    with pytest.raises(ConfigError, match=r"hold-out images per class: \{'cats': 8, 'dogs': 6\}") as failure:
        split(dataset, tmp_path / "bad", fraction=0.9)
    low, high = allowed_range(str(failure.value))
    assert (low, high) == (0.334, 0.666)
    for fraction in (low, (low + high) / 2, high):
        splits, _ = split(dataset, tmp_path / f"ok{fraction}", fraction=fraction)
        for name in ("val", "test"):
            assert all(sum(e.label == c for e in splits[name]) >= MIN_HOLDOUT for c in CLASSES), (fraction, name)


def test_too_few_holdout_images_for_any_fraction_says_so(dataset: Path, tmp_path: Path) -> None:
    expected = "No fraction can work: the smallest class has 8 hold-out images and needs at least 10"
    with pytest.raises(ConfigError, match=expected):
        split(dataset, tmp_path / "s", min_holdout=5)
    assert not (tmp_path / "s").exists()


def test_the_split_stage_refuses_a_bad_fraction_and_keeps_its_outputs(tmp_path: Path) -> None:
    make_dataset(tmp_path / "data" / "raw")
    first = run_entry("split.py", *UNPINNED, *expected_overrides(), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    outputs = [tmp_path / "data" / "split", tmp_path / "metrics", tmp_path / "plots"]
    before = snapshot(*outputs)
    assert {p.name for p in before} >= {"train.csv", "val.csv", "test.csv", "rejects.csv", "data.json", "samples.png"}
    result = run_entry("split.py", *UNPINNED, *expected_overrides(), "data.test_fraction=0.999", cwd=tmp_path)
    assert result.returncode != 0
    assert "data.test_fraction: got 0.999" in result.stderr
    assert "val {'cats': 0, 'dogs': 0}" in result.stderr
    assert "set data.test_fraction from 0.25 to 0.75" in result.stderr
    assert snapshot(*outputs) == before


def test_an_image_changed_after_the_download_is_named_before_anything_is_split(dataset: Path, tmp_path: Path) -> None:
    folders = {"train": CLASSES, "validation": CLASSES}
    pairs = content_pairs(dataset, folders)
    (tmp_path / "pinned.sha256").write_text(listing(pairs))
    pin = DataPin(content_hash(pairs), tmp_path / "pinned.sha256")
    splits, _ = make_split(
        dataset, tmp_path / "s", CLASSES, "train", "validation", 0.5, 0, min_holdout_per_class=2, pin=pin
    )
    assert len(splits["train"]) == 2 * TINY_COUNTS["train"]
    (dataset / "validation" / "cats" / "cat.validation5.jpg").write_bytes(jpeg_bytes((0, 0, 0), seed=99))
    with pytest.raises(ContentError) as refused:
        make_split(dataset, tmp_path / "t", CLASSES, "train", "validation", 0.5, 0, min_holdout_per_class=2, pin=pin)
    assert str(refused.value).startswith(
        f"{dataset}: the images are not the ones data.content_sha256 pins: 1 changed (validation/cats/cat.validation5.jpg); "
        "the data set changed after its download: fetch it again with `dvc repro -f download`"
    )
    assert not (tmp_path / "t").exists()


def test_the_data_version_is_the_content_hash_of_the_split_images(dataset: Path, tmp_path: Path) -> None:
    """The same images in the same splits give the same version, whatever wrote the manifests; another draw of val
    and test, or one image's bytes, another."""
    split(dataset, tmp_path / "a")
    split(dataset, tmp_path / "b")
    split(dataset, tmp_path / "c", seed=1)
    assert data_version(tmp_path / "a") == data_version(tmp_path / "b") != data_version(tmp_path / "c")
    pairs = [
        (f"{n}:{e.label}:{e.path}", e.sha256)
        for n in ("train", "val", "test")
        for e in read_manifest(tmp_path / "a" / f"{n}.csv")
    ]
    assert data_version(tmp_path / "a") == content_hash(reversed(pairs))[:16]
    (dataset / "train" / "cats" / "cat.train0.jpg").write_bytes(jpeg_bytes((0, 0, 0), seed=99))
    split(dataset, tmp_path / "d")
    assert data_version(tmp_path / "d") != data_version(tmp_path / "a")


def test_the_split_stage_leaves_out_the_files_params_exclude_and_says_so(tmp_path: Path) -> None:
    make_dataset(tmp_path / "data" / "raw")
    gone = "train/cats/cat.train0.jpg"
    exclude = f"data.exclude=[{{path:{gone},reason:blurry}}]"
    result = run_entry("split.py", UNPINNED[0], *expected_overrides(), exclude, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "0 rejected" not in result.stdout and "(1 excluded)" in result.stdout
    assert gone not in {e.path for e in read_manifest(tmp_path / "data" / "split" / "train.csv")}
    with open(tmp_path / "data" / "split" / "rejects.csv", newline="") as handle:
        assert list(csv.DictReader(handle)) == [{"path": gone, "reason": "excluded (data.exclude): blurry"}]
    assert json.loads((tmp_path / "metrics" / "data.json").read_text())["excluded"] == 1
