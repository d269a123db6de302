"""Figures: sample images, learning curves, augmentation previews, confusion matrices, leaderboards."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from catdog.common.files import atomic_path  # noqa: E402

DPI = 100
TILE_INCHES = 1.8


def save(fig: Figure, path: Path) -> Path:
    """Write `fig` as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def image_grid(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[Sequence[str]], suptitle: str) -> Figure:
    """A grid of images, one list per row, each with its title."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(TILE_INCHES * n_cols, TILE_INCHES * n_rows), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    for r, (images, labels) in enumerate(zip(rows, titles, strict=True)):
        for c, (image, label) in enumerate(zip(images, labels, strict=True)):
            axes[r][c].imshow(np.asarray(image).astype("uint8"))
            axes[r][c].set_title(label, fontsize=8)
    fig.suptitle(suptitle)
    return fig


def sample_grid(dataset_dir: Path, paths_by_class: Mapping[str, Sequence[str]]) -> Figure:
    """One row of train images per class, as the original study showed them."""
    rows = [
        [np.asarray(Image.open(dataset_dir / p).convert("RGB")) for p in paths] for paths in paths_by_class.values()
    ]
    titles = [[f"{cls}: {Path(p).name}" for p in paths] for cls, paths in paths_by_class.items()]
    return image_grid(rows, titles, "Train split samples")


def learning_curves(history: Mapping[str, Sequence[float]], title: str) -> Figure:
    """Train/val accuracy and loss per epoch, side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        ax.plot(epochs, history[metric], marker="o", label=f"train {metric}")
        ax.plot(epochs, history[f"val_{metric}"], marker="o", label=f"val {metric}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return fig


def confusion_matrices(matrices: Mapping[str, np.ndarray], classes: Sequence[str]) -> Figure:
    """One confusion matrix per model (rows: true class, columns: predicted class)."""
    fig, axes = plt.subplots(1, len(matrices), figsize=(3.2 * len(matrices), 3.2), squeeze=False)
    for ax, (name, matrix) in zip(axes[0], matrices.items(), strict=True):
        ax.imshow(matrix, cmap="Blues")
        for (i, j), value in np.ndenumerate(matrix):
            colour = "white" if value > matrix.max() / 2 else "black"
            ax.text(j, i, str(value), ha="center", va="center", color=colour)
        ax.set_xticks(range(len(classes)), classes)
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(name)
    fig.suptitle("Confusion matrices on the test split")
    fig.tight_layout()
    return fig


def accuracy_bars(rows: Sequence[Mapping[str, float | str]]) -> Figure:
    """Test accuracy of each model with its 95% confidence interval (and, where a row has `per_seed`, each seed's)."""
    names = [str(r["name"]) for r in rows]
    acc = np.array([float(r["accuracy"]) for r in rows])
    err = np.array([[a - float(r["ci_low"]), float(r["ci_high"]) - a] for a, r in zip(acc, rows, strict=True)]).T
    fig, ax = plt.subplots(figsize=(1.6 * len(rows) + 2, 4))
    ax.bar(names, acc, yerr=err, capsize=6, color="tab:blue", alpha=0.8)
    for i, value in enumerate(acc):
        ax.text(i, value / 2, f"{value:.1%}", ha="center", color="white", fontweight="bold")
    seeded = [(i, list(r["per_seed"].values())) for i, r in enumerate(rows) if r.get("per_seed")]
    for i, values in seeded:  # each training seed's run: the mean's bar and interval come from these
        ax.scatter(
            [i] * len(values), values, color="black", s=14, zorder=3, label="one seed" if i == seeded[0][0] else None
        )
    if seeded:
        ax.legend(loc="lower right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("test accuracy (95% CI)" if not seeded else "test accuracy: mean over seeds (95% CI)")
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Test accuracy")
    return fig


def validation_curves(histories: Mapping[str, Sequence[float]]) -> Figure:
    """The validation accuracy of every model per epoch on one chart."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in histories.items():
        ax.plot(np.arange(1, len(values) + 1), values, marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.suptitle("Validation accuracy per epoch")
    return fig
