"""What a finished run leaves behind: its model, metrics, history and figures, in the study's places or its own."""

from __future__ import annotations

from pathlib import Path

import keras
import mlflow
import numpy as np
from omegaconf import DictConfig

from catdog.common import plots
from catdog.common.files import atomic_path, write_json, write_text
from catdog.data.dataset import Split
from catdog.serve.classifier import log_classifier
from catdog.settings.run_files import Outputs
from catdog.tracking.records import write_record
from catdog.tracking.registry import log_model
from catdog.train.checkpoints import History, State, best_epoch
from catdog.train.dead_runs import METRIC, TAG, WHAT, did_not_learn, majority_interval
from catdog.train.models import parameter_counts
from catdog.train.run_log import describe_run, where_to_look

MONITOR = "val_accuracy"
EXAMPLE_IMAGES = 2


def write_history_csv(path: Path, history: History) -> None:
    keys = sorted(history)
    rows = ["epoch," + ",".join(keys)]
    rows += [f"{i + 1}," + ",".join(f"{history[k][i]:.6g}" for k in keys) for i in range(len(history[keys[0]]))]
    write_text(path, "\n".join(rows) + "\n")


def summary(history: History, seconds: float, counts: dict[str, int]) -> dict[str, float | int]:
    """The run's metrics for DVC and MLflow: the last epoch's validation values, the best epoch's (the first with the
    highest val accuracy, whose weights are the run's model: its val accuracy and loss), epochs, time, size."""
    best = best_epoch(history[MONITOR])
    return {
        "val_accuracy": history["val_accuracy"][-1],
        "val_loss": history["val_loss"][-1],
        "best_val_accuracy": history["val_accuracy"][best],
        "best_val_loss": history["val_loss"][best],
        "best_epoch": best + 1,
        "epochs_run": len(history[MONITOR]),
        "seconds": round(seconds, 1),
        **counts,
    }


def augmentation_preview(model: keras.Model, image: np.ndarray, samples: int) -> plots.Figure:
    """One train image passed through the model's augmentation layers several times."""
    layer = model.get_layer("augmentation")
    views = [keras.ops.convert_to_numpy(layer(image[None].astype("float32"), training=True))[0] for _ in range(samples)]
    return plots.image_grid([views], [[f"#{i + 1}" for i in range(samples)]], "Augmentation preview")


def save_model(model: keras.Model, outputs: Outputs) -> None:
    with atomic_path(outputs.model) as tmp:
        model.save(tmp)


def write_outputs(cfg: DictConfig, model: keras.Model, state: State, data: dict[str, Split], seconds: float) -> dict:
    """Write the run's model, metrics, history and figures, and complete its MLflow run; return the metrics."""
    outputs = Outputs.for_run(cfg)
    metrics = summary(state.history, seconds, parameter_counts(model))
    patience = cfg.trainer.early_stopping.patience if cfg.trainer.early_stopping.enabled else None
    dead = did_not_learn(state.history[MONITOR], patience, majority_interval(data["train"].labels, data["val"].labels))
    metrics[METRIC] = int(dead)
    mlflow.set_tag(TAG, str(dead).lower())
    if dead:
        print(f"{cfg.name}: did not learn ({WHAT}); tagged {TAG} in MLflow")
    save_model(model, outputs)
    write_json(outputs.metrics, metrics)
    write_history_csv(outputs.history, state.history)
    curves = plots.learning_curves(state.history, f"{cfg.name}: learning curves")
    mlflow.log_figure(curves, "figures/learning_curves.png")
    plots.save(curves, outputs.curves)
    if cfg.augment.enabled:
        preview = augmentation_preview(model, data["train"].images[0], cfg.augment.preview_samples)
        mlflow.log_figure(preview, "figures/augmentation_preview.png")
        plots.save(preview, outputs.augmentation)
    mlflow.log_metrics({f"final_{k}": float(v) for k, v in metrics.items()})
    # Two logged models: the Keras flavour (raw image tensors in) for Python users, and the classifier pyfunc
    # (image files in, labels out) that compare registers and `mlflow models serve` serves, whose Keras model is the
    # file just saved (not the model serialized once more).
    model_uri = log_model(model, data["val"].images[:EXAMPLE_IMAGES].astype("float32"))
    classes, max_pixels = list(cfg.data.classes), cfg.data.max_pixels
    classifier_uri = log_classifier(model, classes, max_pixels=max_pixels, saved=outputs.model).model_uri
    write_record(outputs.record, state.run_id, {"model_uri": model_uri, "classifier_uri": classifier_uri})
    describe_run(cfg.name, metrics)
    run = mlflow.active_run().info
    print(f"{cfg.name}: model, metrics and plots written to {outputs.where()}")
    print(f"{cfg.name}: MLflow run at {where_to_look(mlflow.get_tracking_uri(), run.experiment_id, run.run_id)}")
    return metrics
