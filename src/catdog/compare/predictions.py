"""Every run's answer for every test image, as compare scored it (`compare.predictions`,
reports/test_predictions.csv): one row per run and image, in the test manifest's order, with the predicted class
and its softmax probability. The report reads the champion's rows instead of predicting the test split again."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catdog.common.files import StudyFileMissing, required, write_text
from catdog.serve.classifier import softmax

FIELDS = ("run", "path", "label", "predicted", "probability")
STAGE = "compare"


@dataclass(frozen=True)
class Answers:
    """One run's answers on the test split, in manifest order."""

    predicted: np.ndarray  # class index per image
    probability: np.ndarray  # float64: the softmax probability of the predicted class

    @classmethod
    def of(cls, logits: np.ndarray) -> Answers:
        """The predicted class (the largest logit) and its probability (softmax in float64) per row of `logits`."""
        probabilities = softmax(np.asarray(logits, np.float64))
        predicted = np.asarray(logits).argmax(axis=1)
        return cls(predicted, probabilities[np.arange(len(predicted)), predicted])


def write_predictions(
    path: str | Path, paths: list[str], labels: np.ndarray, classes: list[str], runs: dict[str, Answers]
) -> None:
    """The test rows of every run in `runs` (keyed by run name), written atomically; probabilities as Python's
    shortest round-trip text, so a reader gets the very float64 written."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(FIELDS)
    for run, answers in runs.items():
        for i, (file, label) in enumerate(zip(paths, labels, strict=True)):
            predicted = classes[answers.predicted[i]]
            writer.writerow([run, file, classes[label], predicted, repr(float(answers.probability[i]))])
    write_text(path, buffer.getvalue())


class PredictionsMismatch(StudyFileMissing):
    """The predictions file is not compare's for this run and test split."""


def read_predictions(path: str | Path, run: str, paths: list[str], labels: np.ndarray, classes: list[str]) -> Answers:
    """Run `run`'s answers from `path`, checked against the test split (`paths`, `labels`, in manifest order)."""
    path = required(path, STAGE)
    fix = f"rerun `dvc repro {STAGE}`"
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != FIELDS:
            raise PredictionsMismatch(f"{path}: expected columns {', '.join(FIELDS)}; {fix}")
        rows = [row for row in reader if row["run"] == run]
    truth = [(file, classes[label]) for file, label in zip(paths, labels, strict=True)]
    if [(row["path"], row["label"]) for row in rows] != truth:
        found = f"{len(rows)} rows" if rows else "no rows"
        raise PredictionsMismatch(
            f"{path}: {found} for run {run!r}, not the {len(truth)} test images of the split in manifest order; {fix}"
        )
    try:
        predicted = np.array([classes.index(row["predicted"]) for row in rows], dtype=int)
        probability = np.array([float(row["probability"]) for row in rows], dtype=np.float64)
    except ValueError as exc:
        raise PredictionsMismatch(
            f"{path}: run {run!r} has a row that is not a class and a probability ({exc}); {fix}"
        ) from exc
    return Answers(predicted, probability)
