"""The comparison's figures: confusion matrices, test accuracy bars (with each seed's run), validation curves and the
champion's mistakes, as PNG files; and each variant's curves as CSV for `dvc plots`."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from catdog.common import plots
from catdog.common.files import atomic_path
from catdog.compare.leaderboard import MAJORITY
from catdog.data.dataset import Split

MISCLASSIFIED_SHOWN = 16
MISCLASSIFIED_COLUMNS = 8
HISTORY_DIR = "history"


def read_history(path: Path) -> list[float]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [float(row["val_accuracy"]) for row in csv.DictReader(handle)]


def copy_histories(histories: dict[str, Path], dest: Path) -> None:
    """Each variant's history.csv (its best-validation seed's) as <dest>/history/<variant>.csv, which dvc.yaml's
    top-level plots draw."""
    for variant, path in histories.items():
        with atomic_path(dest / HISTORY_DIR / f"{variant}.csv") as tmp:
            shutil.copyfile(path, tmp)


def mistakes(outcome: dict, test: Split, champion: str, classes: list[str]) -> plots.Figure | None:
    wrong = np.flatnonzero(~outcome["correct"][champion])[:MISCLASSIFIED_SHOWN]
    if not len(wrong):
        return None
    rows = [wrong[i : i + MISCLASSIFIED_COLUMNS] for i in range(0, len(wrong), MISCLASSIFIED_COLUMNS)]
    pred = outcome["predictions"][champion]
    return plots.image_grid(
        [[test.images[i] for i in row] for row in rows],
        [[f"{classes[test.labels[i]]}→{classes[pred[i]]}" for i in row] for row in rows],
        f"{champion}: misclassified test images (true→predicted), {int((~outcome['correct'][champion]).sum())} in all",
    )


def draw_figures(
    cfg: DictConfig,
    ranked: list[tuple[str, dict]],
    outcome: dict,
    test: Split,
    champion: str,
    histories: dict[str, Path],
    dest: Path,
) -> dict[str, Path]:
    """Confusion matrices, accuracy bars, validation curves and the champion's mistakes, as PNG files (the
    curves, confusion matrices and mistakes are each variant's best-validation seed's); the curves also as CSV."""
    classes = list(cfg.data.classes)
    figures = {
        "confusion_matrices": plots.confusion_matrices(
            {n: np.array(r["confusion_matrix"]) for n, r in ranked if n != MAJORITY}, classes
        ),
        "test_accuracy": plots.accuracy_bars([{"name": n, **r} for n, r in ranked]),
        "val_accuracy": plots.validation_curves({n: read_history(p) for n, p in histories.items()}),
    }
    figure = mistakes(outcome, test, champion, classes)
    if figure is not None:
        figures["misclassified"] = figure
    copy_histories(histories, dest)
    return {name: plots.save(fig, dest / f"{name}.png") for name, fig in figures.items()}
