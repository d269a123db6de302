"""The champion's test images for the report: every mistake (up to a cap) and a few right answers per class, each
with its Grad-CAM overlay for the class the model predicted (what made it say so)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from omegaconf import DictConfig
from PIL import Image

MISCLASSIFIED_CAP = 24
CORRECT_PER_CLASS = 3
GRADCAM_BATCH = 8  # images per gradient pass: MobileNetV2 at 224 px holds a batch's activations for the backward
JPEG_QUALITY = 90


@dataclass(frozen=True)
class Explained:
    """One test image: where it came from, the truth, the model's answer, and the pictures."""

    path: str
    true: str
    predicted: str
    probability: float  # the model's probability for the class it predicted
    image: bytes  # JPEG, at the model's input size
    overlay: bytes  # JPEG: the image under its Grad-CAM heatmap
    heatmap: np.ndarray  # in [0, 1], at the model's input size


@dataclass(frozen=True)
class Explanations:
    variant: str
    image_size: int
    target: str  # the layer Grad-CAM explains
    n_test: int
    wrong_total: int  # every test image the model got wrong (the shown ones are capped)
    misclassified: list[Explained]
    correct: list[Explained]


def pick(
    labels: np.ndarray, predicted: np.ndarray, cap: int, per_class: int, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the mistakes (the first `cap`, in manifest order) and of the first `per_class` right answers of
    each class."""
    wrong = np.flatnonzero(predicted != labels)[:cap]
    right = [np.flatnonzero((predicted == labels) & (labels == c))[:per_class] for c in range(n_classes)]
    return wrong, np.concatenate(right).astype(int)


def jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels).astype(np.uint8)).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def heatmaps(model, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Grad-CAM of `images` for `classes`, a few images per gradient pass."""
    from catdog.report.gradcam import gradcam

    out = [np.zeros((0, *images.shape[1:3]), np.float32)]
    for start in range(0, len(images), GRADCAM_BATCH):
        chunk = slice(start, start + GRADCAM_BATCH)
        out.append(gradcam(model, images[chunk].astype(np.float32), classes[chunk])[0])
    return np.concatenate(out)


def explain(cfg: DictConfig, variant: str, seed: int) -> Explanations:
    """The picks of the model `variant` trained with `seed`, from its answers on the test split as the compare stage
    scored them (`compare.predictions`), explained with the model loaded as compare loads it."""
    from catdog.compare.predictions import read_predictions
    from catdog.compare.stage import input_size, load_variant
    from catdog.data.dataset import configured_split
    from catdog.report.gradcam import overlay, split_at_target
    from catdog.settings.params import study_run

    classes = list(cfg.data.classes)
    model = load_variant(cfg, variant, seed)
    size = input_size(model)
    test = configured_split(cfg.data, "test", size)
    answers = read_predictions(cfg.compare.predictions, study_run(variant, seed), test.paths, test.labels, classes)
    predicted = answers.predicted
    wrong, right = pick(test.labels, predicted, MISCLASSIFIED_CAP, CORRECT_PER_CLASS, len(classes))
    chosen = np.concatenate([wrong, right]).astype(int)
    heat = heatmaps(model, test.images[chosen], predicted[chosen])
    explained = [
        Explained(
            path=test.paths[i],
            true=classes[test.labels[i]],
            predicted=classes[predicted[i]],
            probability=float(answers.probability[i]),
            image=jpeg(test.images[i]),
            overlay=jpeg(overlay(test.images[i], h)),
            heatmap=h,
        )
        for i, h in zip(chosen, heat, strict=True)
    ]
    return Explanations(
        variant=variant,
        image_size=size,
        target=split_at_target(model).target,
        n_test=len(test.labels),
        wrong_total=int((predicted != test.labels).sum()),
        misclassified=explained[: len(wrong)],
        correct=explained[len(wrong) :],
    )
