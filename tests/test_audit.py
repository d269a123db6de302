"""The audit stage on a tiny data set with planted problems: the same photo in train and in the hold-out (leakage),
a cat filed as a dog, and a blank image; each is named with its kind, files, splits and score. And `data.exclude`:
an excluded file leaves the split (the data version changes, test stays as drawn), an unknown one is refused."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASS_COLOURS, CONF, jpeg_bytes, make_dataset
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image, ImageDraw

from catdog.audit.findings import METRICS, REPORT, read_findings
from catdog.data.manifests import data_version, read_manifest
from catdog.data.split import Exclusion, make_split
from catdog.settings.checks import ConfigError

CLASSES = ["cats", "dogs"]
SCENE = "validation/cats/cat.scene.jpg"  # a picture with shapes, unlike the noise of the others
COPY = "train/cats/cat.copy.png"  # the scene's pixels stored as PNG: other bytes, the same photo
FLIPPED = "train/dogs/dog.flipped.jpg"  # a cat's colours in the dogs folder
BLANK = "train/cats/cat.blank.jpg"


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def scene(seed: int) -> Image.Image:
    """A picture of a few coloured shapes on a gradient: what a photo has and the tiny set's noise has not."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(np.linspace(40, 220, 160 * 3).astype("uint8").reshape(1, 160, 3).repeat(120, axis=0))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.integers(0, 130), rng.integers(0, 90)
        box = (x, y, x + rng.integers(15, 40), y + rng.integers(15, 40))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return image


def planted(root: Path) -> Path:
    """The tiny data set (12 train and 8 hold-out images per class) with the three planted problems."""
    dataset = make_dataset(root)
    original = scene(7)
    (dataset / SCENE).write_bytes(jpeg(original))
    with Image.open(dataset / SCENE) as decoded:
        decoded.save(dataset / COPY, format="PNG")
    (dataset / FLIPPED).write_bytes(jpeg_bytes(CLASS_COLOURS["cats"], seed=1000))
    (dataset / BLANK).write_bytes(jpeg(Image.new("RGB", (40, 30), (128, 128, 128))))
    return dataset


def split(dataset: Path, split_dir: Path, exclusions: list[Exclusion] | None = None):
    return make_split(
        dataset,
        split_dir,
        CLASSES,
        "train",
        "validation",
        0.5,
        42,
        min_holdout_per_class=2,
        exclusions=exclusions or [],
    )


def audit_config(dataset: Path, split_dir: Path, *overrides: str) -> DictConfig:
    """conf/audit.yaml (ImageNet weights at 224 px: random ones give features of about 1e-13 at that depth) on the
    tiny data, with three folds."""
    paths = [
        f"data.dataset_dir={dataset}",
        f"data.split_dir={split_dir}",
        f"data.cache_dir={split_dir.parent / 'cache'}",
    ]
    tiny = ["audit.folds=3", "data.exclude=[]", *overrides]  # as the split was drawn
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("audit", overrides=paths + tiny)


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list]:
    """The planted data set split and audited once for this module's tests (in its own working folder)."""
    from catdog.audit.stage import audit

    root = tmp_path_factory.mktemp("audit")
    dataset = planted(root / "raw")
    split(dataset, root / "split")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        audit(audit_config(dataset, root / "split"))
    report, findings = read_findings(str(root / REPORT))
    return root, report, findings


def needs_weights(test):
    """An audit of the planted data set with the real ImageNet backbone: TensorFlow in this process for ~30 s, so in
    the full suite only."""
    return pytest.mark.slow(pytest.mark.requires("imagenet")(test))


def named(findings: list, kind: str) -> list[set[str]]:
    return [{f.path for f in x.files} for x in findings if x.kind == kind]


@needs_weights
def test_the_same_photo_in_train_and_the_holdout_is_named_as_leakage(audited) -> None:
    root, _, findings = audited
    pair = {COPY, SCENE}
    (same,) = [x for x in findings if x.kind == "same_photo"]
    assert {f.path for f in same.files} == pair and same.across_splits
    assert {f.split for f in same.files} - {"train"} <= {"val", "test"} and "train" in {f.split for f in same.files}
    assert same.score <= 4 / 64
    assert pair in named(findings, "near_duplicate")


@needs_weights
def test_a_cat_filed_as_a_dog_is_a_likely_label_error(audited) -> None:
    _, _, findings = audited
    labels = [x for x in findings if x.kind == "label"]
    flipped = next(x for x in labels if x.files[0].path == FLIPPED)
    assert flipped.files[0].label == "dogs" and "gives cats" in flipped.note
    assert flipped.score < 0.01


@needs_weights
def test_a_blank_image_is_an_outlier(audited) -> None:
    _, _, findings = audited
    outliers = [x for x in findings if x.kind == "outlier"]
    assert outliers and outliers[0].files[0].path == BLANK, [x.files[0].path for x in outliers]


@needs_weights
def test_the_metrics_count_each_kind_and_the_report_keeps_the_settings(audited) -> None:
    root, report, findings = audited
    metrics = json.loads((root / METRICS).read_text())
    assert metrics["images"] == 2 * (12 + 8) + 4
    for kind in ("label", "outlier", "near_duplicate", "same_photo"):
        assert metrics[kind] == len(named(findings, kind)) == report["counts"][kind]
    assert metrics["leakage"] >= 1 and metrics["excluded"] == 0
    assert report["settings"]["backbone"]["weights"] == "imagenet" and report["machine"]["id"]
    assert report["data_version"] == data_version(root / "split")


@needs_weights
def test_the_features_are_cached_beside_the_decoded_images(audited) -> None:
    root, _, _ = audited
    cached = sorted(p.name for p in (root / "cache").glob("embeddings-*.npz"))
    assert [n.split("-")[4] for n in cached] == ["test", "train", "val"], cached
    with np.load(next((root / "cache").glob("embeddings-*train*.npz"))) as stored:
        assert stored["features"].shape == (2 * 12 + 3, 1280)


def test_an_excluded_file_leaves_the_split_and_changes_the_data_version(tmp_path: Path) -> None:
    """Excluded files leave after val and test are drawn: excluding a val image moves no other image between them."""
    dataset = planted(tmp_path / "raw")
    split(dataset, tmp_path / "before")
    before = {n: [e.path for e in read_manifest(tmp_path / "before" / f"{n}.csv")] for n in ("val", "test")}
    val_image = before["val"][0]
    out = [Exclusion(COPY, "the same photo as a hold-out image"), Exclusion(val_image, "blurry")]
    splits, rejects = split(dataset, tmp_path / "after", out)
    assert not {e.path for entries in splits.values() for e in entries} & {COPY, val_image}
    assert {r.path: r.reason for r in rejects}[COPY] == "excluded (data.exclude): the same photo as a hold-out image"
    assert [e.path for e in splits["val"]] == before["val"][1:]
    assert [e.path for e in splits["test"]] == before["test"]
    assert data_version(tmp_path / "after") != data_version(tmp_path / "before")


def test_an_excluded_path_not_in_the_data_set_is_named(tmp_path: Path) -> None:
    dataset = planted(tmp_path / "raw")
    with pytest.raises(
        ConfigError, match=r"data.exclude in params.yaml: train/cats/cat\.nope\.jpg not in the data set"
    ):
        split(dataset, tmp_path / "s", [Exclusion("train/cats/cat.nope.jpg", "typo")])
    assert not (tmp_path / "s").exists()


@needs_weights
def test_the_study_page_section_shows_each_finding_with_its_images_inside_the_page(audited) -> None:
    from catdog.report.audit_section import audit as section
    from catdog.report.html import page

    root, _, findings = audited
    html = page("t", "s", [section(root / "raw" / "cats_and_dogs_filtered", *read_findings(str(root / REPORT)))])
    for finding in findings:
        assert all(f"{f.path} ({f.split}, {f.label})" in html for f in finding.files)
    assert "in two splits: leakage" in html
    assert html.count('src="data:image/jpeg;base64,') == sum(len(f.files) for f in findings)
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", html) and "No file is excluded" in html


def test_bad_audit_settings_are_named_before_anything_runs(tmp_path: Path) -> None:
    from catdog.audit.settings import check

    cfg = audit_config(
        tmp_path, tmp_path / "split", "audit.folds=1", "audit.phash_max_bits=65", "audit.backbone.weights=x"
    )
    with pytest.raises(ConfigError) as refused:
        check(cfg.audit)
    assert str(refused.value).splitlines() == [
        "audit.backbone.weights: got 'x'; expected `imagenet`, or null (random)",
        "audit.folds: got 1; expected an integer >= 2",
        "audit.phash_max_bits: got 65; expected an integer from 0 to 64",
    ]
    check(audit_config(tmp_path, tmp_path / "split").audit)
