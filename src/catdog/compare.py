"""The comparison stage: every trained variant evaluated on the held-out test split, ranked, and the winner registered."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import keras
import mlflow
import numpy as np
from omegaconf import DictConfig

from catdog import plots
from catdog.config import tracking_uri, validate
from catdog.dataset import Split, batches, configured_split
from catdog.evaluate import log_loss, pairwise_tests, score
from catdog.files import write_json, write_text
from catdog.leaderboard import CHOSEN_BY, MAJORITY, dvc_metrics, leaderboard
from catdog.manifests import data_version, majority_class, read_manifest
from catdog.registry import register
from catdog.store import connect
from catdog.tracking import log_split_inputs, source_tags
from catdog.outputs import Outputs

MISCLASSIFIED_SHOWN = 16
MISCLASSIFIED_COLUMNS = 8


class ModelLoadError(RuntimeError):
    """A variant's model file is missing or unreadable."""


def load_variant(cfg: DictConfig, variant: str) -> keras.Model:
    """The trained model of `variant`, or an error naming the variant, the path and the fix."""
    path = Outputs.study(cfg.trainer, variant).model
    fix = f"run `dvc repro train@{variant}` (or `python src/train.py variant={variant}`)"
    if not path.is_file():
        raise ModelLoadError(f"variant {variant!r}: model file {path} not found; {fix}")
    try:
        # Uncompiled: only inference is needed, and the one-step predict loop traces faster than a multi-step one.
        return keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise ModelLoadError(f"variant {variant!r}: model file {path} could not be loaded ({exc}); {fix}") from exc


def validation_scores(cfg: DictConfig, variants: list[str]) -> dict[str, dict]:
    """Each variant's best val accuracy and loss, from the metrics its training run wrote."""
    scores = {}
    for variant in variants:
        path = Outputs.study(cfg.trainer, variant).metrics
        if not path.is_file():
            raise ModelLoadError(f"variant {variant!r}: metrics file {path} not found; run `dvc repro train@{variant}`")
        metrics = json.loads(path.read_text(encoding="utf-8"))
        scores[variant] = {k: metrics[k] for k in ("best_val_accuracy", "best_val_loss", "best_epoch")}
    return scores


def pick_champion(val: dict[str, dict]) -> str:
    """The variant with the best val accuracy; ties go to the lower val loss, then to the first listed."""
    order = list(val)
    return min(val, key=lambda v: (-val[v]["best_val_accuracy"], val[v]["best_val_loss"], order.index(v)))


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


def draw_figures(
    cfg: DictConfig, ranked: list[tuple[str, dict]], outcome: dict, test: Split, champion: str, dest: Path
) -> dict[str, Path]:
    """Confusion matrices, accuracy bars, validation curves and the champion's mistakes, as PNG files."""
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
    best = champion
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


def logged_model_uri(cfg: DictConfig, variant: str) -> str:
    """The classifier (image files in, labels out) `variant`'s training run logged, as the run recorded it."""
    run_info = Outputs.study(cfg.trainer, variant).run_info
    if not run_info.is_file():
        raise ModelLoadError(f"variant {variant!r}: {run_info} not found; run `dvc repro train@{variant}`")
    return json.loads(run_info.read_text(encoding="utf-8"))["classifier_uri"]


def register_champion(cfg: DictConfig, name: str, model_uri: str, row: dict, val: dict) -> tuple[str, str]:
    """Register the champion's model as its training run logged it (the version's source and run are the
    training run's), with how it was chosen and its scores as tags; return (version, alias)."""
    tags = {
        "variant": name,
        "chosen_by": CHOSEN_BY,
        "val_accuracy": f"{val['best_val_accuracy']:.4f}",
        "test_accuracy": f"{row['accuracy']:.4f}",
    }
    return register(cfg.tracking, model_uri, tags)


def compare(cfg: DictConfig) -> dict:
    """Evaluate every variant on the test split; write the report, figures and metrics; register the champion."""
    started = time.monotonic()
    validate(cfg)
    experiment_id = connect(tracking_uri(cfg.tracking.uri), cfg.tracking.experiment, cfg.tracking.connect_timeout_s)
    variants = list(cfg.study.variants)
    models = {v: load_variant(cfg, v) for v in variants}
    val = validation_scores(cfg, variants)
    champion = pick_champion(val)
    model_uri = logged_model_uri(cfg, champion)
    splits = test_splits(cfg, {input_size(m) for m in models.values()})
    rows, outcome = evaluate_all(cfg, models, splits)
    ranked = sorted(rows.items(), key=lambda item: -item[1]["accuracy"])
    test = splits[input_size(models[champion])]
    tests = pairwise_tests(outcome["correct"])
    version = data_version(Path(cfg.data.split_dir))
    report = leaderboard(ranked, tests, len(test.labels), version, champion, val)
    figures = draw_figures(cfg, ranked, outcome, test, champion, Path(cfg.compare.plots_dir))
    details = {
        "champion": champion,
        "chosen_by": CHOSEN_BY,
        "n_test": len(test.labels),
        "validation": val,
        "models": rows,
        "pairwise": tests,
    }
    with mlflow.start_run(experiment_id=experiment_id, run_name="compare") as run:
        mlflow.set_tags({"stage": "compare", "data_version": version, "champion": champion, **source_tags()})
        for name, row in rows.items():
            mlflow.log_metrics({f"{name}.test_accuracy": row["accuracy"], f"{name}.test_ci_low": row["ci_low"]})
        mlflow.log_text(report, "leaderboard.md")
        mlflow.log_dict(details, "compare.json")
        for path in figures.values():
            mlflow.log_artifact(str(path), "figures")
        log_split_inputs(Path(cfg.data.split_dir), {"test": "test"})
        registered = register_champion(cfg, champion, model_uri, rows[champion], val[champion])
    details["champion_version"], details["champion_alias"] = registered
    # The report stage logs its HTML to this run, and shows the stage's wall time.
    details["run_id"], details["seconds"] = run.info.run_id, round(time.monotonic() - started, 1)
    write_json(cfg.compare.details, details)
    write_text(cfg.compare.leaderboard, report)
    write_json(cfg.compare.metrics, dvc_metrics(ranked, val))
    return details
