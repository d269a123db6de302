"""The comparison stage: every trained variant evaluated on the held-out test split, ranked, and the winner registered."""

from __future__ import annotations

import csv
from pathlib import Path

import keras
import mlflow
import numpy as np
from omegaconf import DictConfig

from catdog import plots
from catdog.config import validate
from catdog.dataset import Split, batches, configured_split
from catdog.evaluate import log_loss, pairwise_tests, score
from catdog.files import write_json, write_text
from catdog.split import SPLITS, majority_class, read_manifest
from catdog.tracking import connect, data_version, log_model, source_tags, tracking_uri
from catdog.training import Outputs

MAJORITY = "majority-class"
MISCLASSIFIED_SHOWN = 16
MISCLASSIFIED_COLUMNS = 8


class ModelLoadError(RuntimeError):
    """A variant's model file is missing or unreadable."""


def load_variant(cfg: DictConfig, variant: str) -> keras.Model:
    """The trained model of `variant`, or an error naming the variant, the path and the fix."""
    path = Outputs.for_run(cfg.trainer, variant).model
    fix = f"run `dvc repro train@{variant}` (or `python src/train.py variant={variant}`)"
    if not path.is_file():
        raise ModelLoadError(f"variant {variant!r}: model file {path} not found; {fix}")
    try:
        # Uncompiled: only inference is needed, and the one-step predict loop traces faster than a multi-step one.
        return keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise ModelLoadError(f"variant {variant!r}: model file {path} could not be loaded ({exc}); {fix}") from exc


def input_size(model: keras.Model) -> int:
    return int(model.input_shape[1])


def test_splits(cfg: DictConfig, sizes: set[int]) -> dict[int, Split]:
    """The test split at each input size the models take (decoded once per size, then cached)."""
    return {size: configured_split(cfg.data, "test", size) for size in sorted(sizes)}


def evaluate_all(cfg: DictConfig, models: dict[str, keras.Model], tests: dict[int, Split]) -> tuple[dict, dict]:
    """Scores of each model and of the majority-class guess; the per-image right/wrong of each model."""
    classes = list(cfg.data.classes)
    rows: dict[str, dict] = {}
    correct: dict[str, np.ndarray] = {}
    predictions: dict[str, np.ndarray] = {}
    test = next(iter(tests.values()))
    for name, model in models.items():
        images = tests[input_size(model)]
        logits = model.predict(batches(images, cfg.trainer.batch_size, shuffle=False, seed=cfg.seed), verbose=0)
        predictions[name] = logits.argmax(axis=1)
        rows[name] = {**score(predictions[name], test.labels, classes), "loss": log_loss(logits, test.labels)}
        correct[name] = predictions[name] == test.labels
    majority = majority_class(read_manifest(Path(cfg.data.split_dir) / "train.csv"), classes)
    guess = np.full_like(test.labels, classes.index(majority))
    rows[MAJORITY] = {**score(guess, test.labels, classes), "loss": None}
    return rows, {"correct": correct, "predictions": predictions}


def leaderboard(ranked: list[tuple[str, dict]], tests: list[dict], n_test: int, version: str) -> str:
    """The Markdown report: ranking with intervals, per-class scores and which differences are significant."""
    lines = [
        "# Leaderboard (held-out test split)",
        "",
        f"{n_test} test images, data version `{version}`. Accuracy with a 95% Wilson interval; "
        "differences tested pairwise with exact McNemar tests, Holm-adjusted (α = 0.05).",
        "",
        "| rank | model | accuracy | 95% CI | loss | " + " | ".join(f"{c} P / R / F1" for c in ranked[0][1]["per_class"]) + " |",
        "|---|---|---|---|---|" + "---|" * len(ranked[0][1]["per_class"]),
    ]
    for rank, (name, row) in enumerate(ranked, start=1):
        loss = "–" if row["loss"] is None else f"{row['loss']:.3f}"
        per_class = " | ".join(
            f"{m['precision']:.2f} / {m['recall']:.2f} / {m['f1']:.2f}" for m in row["per_class"].values()
        )
        lines.append(
            f"| {rank} | {name} | {row['accuracy']:.1%} | {row['ci_low']:.1%} – {row['ci_high']:.1%} | {loss} | {per_class} |"
        )
    lines += ["", "## Pairwise McNemar tests", "", "| A | B | only A right | only B right | p | p (Holm) | significant |"]
    lines.append("|---|---|---|---|---|---|---|")
    for t in tests:
        verdict = "yes" if t["significant"] else "no"
        lines.append(
            f"| {t['a']} | {t['b']} | {t['only_a_right']} | {t['only_b_right']} | {t['p_value']:.3g} | {t['p_holm']:.3g} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def draw_figures(cfg: DictConfig, ranked: list[tuple[str, dict]], outcome: dict, test: Split, dest: Path) -> dict[str, Path]:
    """Confusion matrices, accuracy bars, validation curves and the best model's mistakes, as PNG files."""
    classes = list(cfg.data.classes)
    models = [name for name, _ in ranked if name != MAJORITY]
    figures = {
        "confusion_matrices": plots.confusion_matrices(
            {n: np.array(r["confusion_matrix"]) for n, r in ranked if n != MAJORITY}, classes
        ),
        "test_accuracy": plots.accuracy_bars([{"name": n, **r} for n, r in ranked]),
        "val_accuracy": plots.validation_curves(
            {n: read_history(Path(cfg.trainer.plots_dir) / n / "history.csv") for n in models}
        ),
    }
    best = models[0]
    wrong = np.flatnonzero(~outcome["correct"][best])[:MISCLASSIFIED_SHOWN]
    if len(wrong):
        rows = [wrong[i : i + MISCLASSIFIED_COLUMNS] for i in range(0, len(wrong), MISCLASSIFIED_COLUMNS)]
        pred = outcome["predictions"][best]
        figures["misclassified"] = plots.image_grid(
            [[test.images[i] for i in row] for row in rows],
            [[f"{classes[test.labels[i]]}→{classes[pred[i]]}" for i in row] for row in rows],
            f"{best}: misclassified test images (true→predicted), {int((~outcome['correct'][best]).sum())} in all",
        )
    return {name: plots.save(fig, dest / f"{name}.png") for name, fig in figures.items()}


def read_history(path: Path) -> list[float]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [float(row["val_accuracy"]) for row in csv.DictReader(handle)]


def register_champion(cfg: DictConfig, name: str, model: keras.Model, row: dict, example: np.ndarray) -> str:
    """Log the winning model in the comparison run, register it, and point the champion alias at it."""
    log_model(model, example)
    run_id = mlflow.active_run().info.run_id
    version = mlflow.register_model(f"runs:/{run_id}/model", cfg.tracking.registered_model)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(cfg.tracking.registered_model, cfg.tracking.champion_alias, version.version)
    tags = {"variant": name, "test_accuracy": f"{row['accuracy']:.4f}"}
    for key, value in tags.items():
        client.set_model_version_tag(cfg.tracking.registered_model, version.version, key, value)
    return version.version


def compare(cfg: DictConfig) -> dict:
    """Evaluate every variant on the test split; write the report, figures and metrics; register the champion."""
    validate(cfg)
    experiment_id = connect(tracking_uri(cfg.tracking.uri), cfg.tracking.experiment, cfg.tracking.connect_timeout_s)
    variants = list(cfg.study.variants)
    models = {v: load_variant(cfg, v) for v in variants}
    splits = test_splits(cfg, {input_size(m) for m in models.values()})
    rows, outcome = evaluate_all(cfg, models, splits)
    ranked = sorted(rows.items(), key=lambda item: -item[1]["accuracy"])
    champion = next(name for name, _ in ranked if name != MAJORITY)
    test = splits[input_size(models[champion])]
    tests = pairwise_tests(outcome["correct"])
    version = data_version(Path(cfg.data.split_dir), SPLITS)
    report = leaderboard(ranked, tests, len(test.labels), version)
    figures = draw_figures(cfg, ranked, outcome, test, Path(cfg.compare.plots_dir))
    details = {"champion": champion, "n_test": len(test.labels), "models": rows, "pairwise": tests}
    with mlflow.start_run(experiment_id=experiment_id, run_name="compare"):
        mlflow.set_tags({"stage": "compare", "data_version": version, "champion": champion, **source_tags()})
        for name, row in rows.items():
            mlflow.log_metrics({f"{name}.test_accuracy": row["accuracy"], f"{name}.test_ci_low": row["ci_low"]})
        mlflow.log_text(report, "leaderboard.md")
        mlflow.log_dict(details, "compare.json")
        for path in figures.values():
            mlflow.log_artifact(str(path), "figures")
        details["champion_version"] = register_champion(
            cfg, champion, models[champion], rows[champion], test.images[:2].astype("float32")
        )
    write_json(cfg.compare.details, details)
    write_text(cfg.compare.leaderboard, report)
    write_json(cfg.compare.metrics, dvc_metrics(ranked))
    return details


def dvc_metrics(ranked: list[tuple[str, dict]]) -> dict[str, dict[str, float | int | None]]:
    """Scalars only, per model, for `dvc metrics diff` and `dvc exp show`."""
    return {
        name: {
            "rank": rank,
            "test_accuracy": row["accuracy"],
            "test_ci_low": row["ci_low"],
            "test_ci_high": row["ci_high"],
            "test_loss": row["loss"],
        }
        for rank, (name, row) in enumerate(ranked, start=1)
    }
