"""The one decode (`catdog.data.images`): EXIF orientation applied as photo viewers apply it, the header read without
decoding, the pixel limit checked on it before any pixel is decoded, and hostile files that each get a label or an
error of their own in the classifier that training, predict.py and the server share."""

from __future__ import annotations

import io
import re

import hostile
import keras
import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config
from PIL import Image, ImageOps

from catdog.data import images
from catdog.data.image_header import ImageError, read_header
from catdog.serve.classifier import ImageClassifier, to_base64
from catdog.train.models import build_model

CLASSES = ["cats", "dogs"]
SIZE = 24


def with_orientation(pixels: np.ndarray, orientation: int, fmt: str) -> bytes:
    """`pixels` as stored, with an EXIF orientation tag saying how to show them."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    options = {"quality": 95} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
    return hostile.encode(pixels, fmt, exif=exif, **options)


def as_viewers_show(data: bytes) -> bytes:
    """The file as PIL shows it (`ImageOps.exif_transpose`), as a PNG without a tag."""
    return hostile.encode(np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")), "PNG")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_viewers_apply_it(fmt: str, orientation: int) -> None:
    pixels = hostile.picture(orientation, 64, 40)  # landscape as stored: 5-8 show it as a portrait
    data = with_orientation(pixels, orientation, fmt)
    assert read_header(data).orientation == orientation
    got = images.decode_image(data, SIZE).astype(int)
    shown = images.decode_image(as_viewers_show(data), SIZE).astype(int)
    stored = images.decode_image(hostile.encode(pixels, "PNG"), SIZE).astype(int)
    # PIL's and TensorFlow's JPEG decoders differ by about one level; the lossless formats agree exactly.
    assert np.abs(got - shown).mean() < (2.0 if fmt == "JPEG" else 1e-9)
    if orientation != 1:
        assert np.abs(got - stored).mean() > 10, "the tag was ignored"


@pytest.mark.parametrize(
    "fmt,options",
    [("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {}), ("BMP", {}), ("GIF", {}), ("WEBP", {}),
     ("WEBP", {"lossless": True})],
)  # fmt: skip
def test_the_header_gives_the_size_pil_reads(fmt: str, options: dict) -> None:
    for width, height in [(1, 1), (37, 91), (300, 20)]:
        data = hostile.encode(hostile.picture(0, width, height), fmt, **options)
        header = read_header(data)
        assert (header.width, header.height, header.frames, header.orientation) == (width, height, 1, 1)


def test_an_animated_gif_counts_its_frames_and_decodes_its_first() -> None:
    data = hostile.animated_gif(3)
    with Image.open(io.BytesIO(data)) as image:
        assert read_header(data).frames == image.n_frames == 3
        first = hostile.encode(np.asarray(image.convert("RGB")), "PNG")
    np.testing.assert_array_equal(images.decode_image(data, SIZE), images.decode_image(first, SIZE))


def test_the_pixel_limit_is_checked_on_the_header_before_any_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    graphs = []
    monkeypatch.setattr(images, "_graph", lambda size: graphs.append(size))  # a decode would fail on None
    bombs = [case for case in hostile.corpus() if case.error == hostile.OVER_THE_LIMIT]
    assert len(bombs) == 3
    for case in bombs:
        with pytest.raises(ImageError, match=r"over the limit of 40 megapixels \(max_pixels=40000000\)"):
            images.decode_image(case.data, SIZE)
    assert graphs == []
    refused = "PNG of 40 x 30 px (0.0012 megapixels) is over the limit of 0.001199 megapixels (max_pixels=1199)"
    with pytest.raises(ImageError, match=f"^{re.escape(refused)}$"):
        images.decode_image(hostile.encode(hostile.picture(0, 40, 30), "PNG"), SIZE, max_pixels=1199)


def test_an_image_at_the_limit_is_decoded() -> None:
    assert images.decode_image(hostile.encode(hostile.picture(0, 40, 30), "PNG"), 8, max_pixels=1200).shape == (8, 8, 3)


@pytest.fixture(scope="module")
def classifier() -> ImageClassifier:
    keras.utils.set_random_seed(7)
    return ImageClassifier.wrap(build_model(tiny_config("scaled"), len(CLASSES)), CLASSES)


def test_every_hostile_file_gets_a_label_or_an_error_of_its_own(classifier: ImageClassifier) -> None:
    cases = hostile.corpus()
    frame = pd.DataFrame({"image": [to_base64(case.data) for case in cases]})
    rows = classifier.predict_frame(frame).to_dict("records")
    assert len(rows) == len(cases)
    for case, row in zip(cases, rows, strict=True):
        if case.error is None:
            assert row["error"] == "" and row["label"] in CLASSES and row["probability"] >= 0.5, case.name
        else:
            assert case.error in row["error"].lower(), (case.name, row["error"])
            assert row["label"] == "" and row["probability"] == 0, case.name


def test_the_classifier_takes_its_limit_from_its_setting(classifier: ImageClassifier) -> None:
    small = ImageClassifier.wrap(classifier.model, CLASSES, max_pixels=1000)
    frame = pd.DataFrame({"image": [to_base64(hostile.encode(hostile.picture(0, 40, 30), "PNG"))]})
    assert "over the limit of 0.001 megapixels (max_pixels=1000)" in small.predict_frame(frame)["error"][0]
    assert classifier.predict_frame(frame)["error"][0] == ""
