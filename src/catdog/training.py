"""One training run: config in, trained model, metrics and a complete MLflow run out."""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import keras
import mlflow
import numpy as np
import tensorflow as tf
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from catdog import plots
from catdog.checkpoints import Checkpoints, EpochEnd, History, State, best_epoch, restore_seed_states
from catdog.config import validate
from catdog.dataset import EpochClock, Split, batches, configured_split, features
from catdog.files import atomic_path, write_json, write_text
from catdog.split import check_split_settings
from catdog.models import build_model, frozen_parts, parameter_counts, unfreeze_backbone
from catdog.tracking import connect, log_model, log_pending_epochs, start_tracking, tracking_uri

MONITOR = "val_accuracy"
EXAMPLE_IMAGES = 2


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass(frozen=True)
class Outputs:
    """Where a run writes its model, metrics and plots."""

    model: Path
    run_info: Path
    metrics: Path
    history: Path
    curves: Path
    augmentation: Path

    @classmethod
    def study(cls, trainer: DictConfig, name: str) -> Outputs:
        """The study's outputs of variant `name`, which DVC tracks: models/<name>/, metrics/<name>.json, plots/<name>/."""
        plots_dir = Path(trainer.plots_dir) / name
        return cls(
            model=Path(trainer.models_dir) / name / "model.keras",
            run_info=Path(trainer.models_dir) / name / "mlflow_run.json",
            metrics=Path(trainer.metrics_dir) / f"{name}.json",
            history=plots_dir / "history.csv",
            curves=plots_dir / "curves.png",
            augmentation=plots_dir / "augmentation.png",
        )

    @classmethod
    def in_folder(cls, folder: Path) -> Outputs:
        """An ad-hoc run's outputs, all in one folder."""
        names = ("model.keras", "mlflow_run.json", "metrics.json", "history.csv", "curves.png", "augmentation.png")
        return cls(*(folder / n for n in names))

    def where(self) -> str:
        """The folders (and metrics file) the outputs are in, for the user."""
        if self.metrics.parent == self.model.parent:
            return f"{self.model.parent}/"
        return f"{self.model.parent}/, {self.metrics}, {self.history.parent}/"

    @classmethod
    def for_run(cls, cfg: DictConfig) -> Outputs:
        """`trainer.outputs=study`: the study's; else the run's Hydra folder (outputs/<name>/ outside Hydra)."""
        if cfg.trainer.outputs == "study":
            return cls.study(cfg.trainer, cfg.name)
        if not HydraConfig.initialized():
            return cls.in_folder(Path("outputs") / cfg.name)
        folder = Path(HydraConfig.get().runtime.output_dir)
        return cls.in_folder(folder.relative_to(Path.cwd()) if folder.is_relative_to(Path.cwd()) else folder)


@contextlib.contextmanager
def precision(mixed: bool) -> Iterator[None]:
    """Keras' global dtype policy for one run (mixed_float16 when `mixed`), restored when the run ends, so the
    next job of a sweep in this process starts from the policy it would have had alone."""
    previous = keras.mixed_precision.global_policy()
    if mixed:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TensorFlow's kernels deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def fingerprint(cfg: DictConfig, data_version: str) -> str:
    """A hash of everything that shapes the run except whether to resume: a changed config or a re-drawn split
    never resumes."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["trainer"].pop("resume", None)
    resolved["data_version"] = data_version
    return hashlib.sha256(OmegaConf.to_yaml(OmegaConf.create(resolved)).encode()).hexdigest()[:16]


def steps_per_epoch(cfg: DictConfig, data: dict[str, Split]) -> int:
    return math.ceil(len(data["train"].labels) / cfg.trainer.batch_size)


def make_optimizer(cfg: DictConfig, steps: int, learning_rate: float | None = None) -> keras.optimizers.Optimizer:
    """The configured optimizer: learning rate constant or cosine-decayed over `steps`, optional EMA."""
    rate = cfg.optimizer.learning_rate if learning_rate is None else learning_rate
    if cfg.trainer.lr_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(rate, decay_steps=steps)
    ema = {"use_ema": True, "ema_momentum": cfg.trainer.ema_momentum} if cfg.trainer.ema_momentum else {}
    return instantiate(cfg.optimizer, learning_rate=rate, **ema)


def compile_model(model: keras.Model, cfg: DictConfig, optimizer: keras.optimizers.Optimizer) -> None:
    """Compile for 2-class logits with `optimizer` and the configured execution settings."""
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=cfg.trainer.jit_compile,
        steps_per_execution=cfg.trainer.steps_per_execution,
    )


def write_history_csv(path: Path, history: History) -> None:
    keys = sorted(history)
    rows = ["epoch," + ",".join(keys)]
    rows += [f"{i + 1}," + ",".join(f"{history[k][i]:.6g}" for k in keys) for i in range(len(history[keys[0]]))]
    write_text(path, "\n".join(rows) + "\n")


def summary(history: History, seconds: float, counts: dict[str, int]) -> dict[str, float | int]:
    """The run's metrics for DVC and MLflow: final and best validation values, epochs, time, size."""
    best = best_epoch(history[MONITOR])
    return {
        "val_accuracy": history["val_accuracy"][-1],
        "val_loss": history["val_loss"][-1],
        "best_val_accuracy": history["val_accuracy"][best],
        "best_val_loss": min(history["val_loss"]),
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


def fit_phase(
    model: keras.Model,
    train: tf.data.Dataset,
    val: tf.data.Dataset,
    clock: EpochClock,
    epochs: int,
    callback: EpochEnd,
) -> None:
    """Fit from the epochs done up to `epochs`, `clock` telling `train` which epoch's order to serve."""
    # With EMA, the averaged weights are swapped in before validation and stay in while the epoch is checkpointed.
    swap = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if model.optimizer.use_ema else []
    # No steps_per_epoch: Keras then starts a new pass over `train` each epoch (with it, one pass would run on
    # across epochs, and a call of steps_per_execution steps would take batches of the next epoch).
    model.fit(
        train,
        validation_data=val,
        initial_epoch=callback.state.epochs_done,
        epochs=epochs,
        callbacks=[clock, *swap, callback],
        shuffle=False,  # the dataset shuffles itself, seeded
        verbose=2,
    )
    if callback.diverged:
        raise TrainingDiverged(f"loss became non-finite in epoch {callback.state.epochs_done + 1}")


def inputs(
    cfg: DictConfig, data: dict[str, Split], extractor: keras.Model | None = None
) -> tuple[tf.data.Dataset, tf.data.Dataset, EpochClock]:
    """Shuffled train and ordered val batches, of images or, given an extractor, of their features, and the clock
    fit must call back so that each epoch's train order is the one for (seed, epoch), resumed or not."""
    t = cfg.trainer
    clock = EpochClock()
    train, val = (features(extractor, data[n], t.batch_size) if extractor else data[n] for n in ("train", "val"))
    shuffled = batches(train, t.batch_size, shuffle=True, seed=cfg.seed, epoch=clock.epoch)
    return shuffled, batches(val, t.batch_size, shuffle=False, seed=cfg.seed), clock


def run_phases(
    cfg: DictConfig,
    model: keras.Model,
    state: State,
    checkpoints: Checkpoints,
    data: dict[str, Split],
    elapsed: Callable[[], float],
) -> None:
    """The head (or whole model) phase, then the optional fine-tuning phase, each resumable."""
    t = cfg.trainer
    patience = t.early_stopping.patience if t.early_stopping.enabled else None

    def epoch_end(saved: keras.Model | None = None) -> EpochEnd:
        report = partial(log_pending_epochs, state.run_id)
        return EpochEnd(checkpoints, state, MONITOR, patience, report, elapsed, saved)

    if state.phase == 0 and cfg.model.get("cache_features"):
        extractor, head = frozen_parts(model)
        # The head's variables are the model's trainable ones: sharing the model's optimizer puts the head's
        # optimizer state (step count, moments, weight average) into the model's checkpoints, so a resume keeps it.
        compile_model(head, cfg, model.optimizer)
        fit_phase(head, *inputs(cfg, data, extractor), t.epochs, epoch_end(saved=model))
    elif state.phase == 0:
        fit_phase(model, *inputs(cfg, data), t.epochs, epoch_end())
    fine_tune = cfg.model.get("fine_tune")
    if not (fine_tune and fine_tune.enabled):
        return
    if state.phase == 0:
        restore_best(model, checkpoints, state)
        unfreeze_backbone(model, fine_tune.from_layer)
        optimizer = make_optimizer(cfg, fine_tune.epochs * steps_per_epoch(cfg, data), fine_tune.learning_rate)
        compile_model(model, cfg, optimizer)
        state.phase, state.phase_start = 1, state.epochs_done
    fit_phase(model, *inputs(cfg, data), state.phase_start + fine_tune.epochs, epoch_end())


def restore_best(model: keras.Model, checkpoints: Checkpoints, state: State) -> None:
    best = checkpoints.path(state.best_file)
    if best is not None:
        model.load_weights(best)


def save_model(model: keras.Model, outputs: Outputs) -> None:
    with atomic_path(outputs.model) as tmp:
        model.save(tmp)


def finish(
    cfg: DictConfig, model: keras.Model, state: State, checkpoints: Checkpoints, data: dict[str, Split], seconds: float
) -> dict:
    """Write the outputs DVC tracks and complete the MLflow run."""
    outputs = Outputs.for_run(cfg)
    if cfg.trainer.early_stopping.enabled:
        restore_best(model, checkpoints, state)
    metrics = summary(state.history, seconds, parameter_counts(model))
    save_model(model, outputs)
    write_json(outputs.metrics, metrics)
    write_json(outputs.run_info, {"run_id": state.run_id, "model_uri": f"runs:/{state.run_id}/model"})
    write_history_csv(outputs.history, state.history)
    curves = plots.learning_curves(state.history, f"{cfg.name}: learning curves")
    mlflow.log_figure(curves, "figures/learning_curves.png")
    plots.save(curves, outputs.curves)
    if cfg.augment.enabled:
        preview = augmentation_preview(model, data["train"].images[0], cfg.augment.preview_samples)
        mlflow.log_figure(preview, "figures/augmentation_preview.png")
        plots.save(preview, outputs.augmentation)
    mlflow.log_metrics({f"final_{k}": float(v) for k, v in metrics.items()})
    log_model(model, data["val"].images[:EXAMPLE_IMAGES].astype("float32"))
    print(f"{cfg.name}: model, metrics and plots written to {outputs.where()}")
    return metrics


def load_data(cfg: DictConfig) -> dict[str, Split]:
    return {name: configured_split(cfg.data, name, cfg.trainer.image_size) for name in ("train", "val")}


def swap_back_training_weights(model: keras.Model) -> None:
    """A checkpoint holds the averaged weights in the model and the trained ones in the optimizer: exchange them."""
    swap = keras.callbacks.SwapEMAWeights()
    swap.set_model(model)
    swap.on_test_begin()


def prepare_model(cfg: DictConfig, state: State | None, checkpoints: Checkpoints, steps: int) -> keras.Model:
    """The checkpointed model (with its optimizer and random seed states) of a resumed run, else a new one compiled
    for `steps`."""
    if state is not None and state.model_file:
        model = keras.models.load_model(checkpoints.path(state.model_file))
        restore_seed_states(model, state.seeds)
        if model.optimizer.use_ema:
            swap_back_training_weights(model)
        return model
    model = build_model(cfg, num_classes=len(cfg.data.classes))
    compile_model(model, cfg, make_optimizer(cfg, steps))
    return model


def train(cfg: DictConfig) -> dict:
    """Train one configured run end to end; return its metrics. Resumes an interrupted run of the same config."""
    validate(cfg)
    version = check_split_settings(cfg.data)
    experiment_id = connect(tracking_uri(cfg.tracking.uri), cfg.tracking.experiment, cfg.tracking.connect_timeout_s)
    with precision(cfg.trainer.mixed_precision):
        return _train(cfg, version, experiment_id)


def _train(cfg: DictConfig, version: str, experiment_id: str) -> dict:
    seed_everything(cfg.seed)
    data = load_data(cfg)
    checkpoints = Checkpoints(Path(cfg.trainer.checkpoint_dir))
    key = fingerprint(cfg, version)
    state = checkpoints.load(key) if cfg.trainer.resume else None
    if state is None:
        checkpoints.clear()
    started, earlier = time.monotonic(), state.seconds if state else 0.0

    def elapsed() -> float:
        """Seconds of this run so far, up to its last checkpoint in earlier, interrupted attempts."""
        return earlier + time.monotonic() - started

    with start_tracking(cfg, state, experiment_id, version) as run:
        state = state or State(fingerprint=key, run_id=run.info.run_id)
        try:
            model = prepare_model(cfg, state, checkpoints, cfg.trainer.epochs * steps_per_epoch(cfg, data))
            if state.history:
                log_pending_epochs(state.run_id, state.history)
            run_phases(cfg, model, state, checkpoints, data, elapsed)
            metrics = finish(cfg, model, state, checkpoints, data, elapsed())
        except Exception as exc:
            mlflow.set_tag("failure_reason", f"{type(exc).__name__}: {exc}"[:5000])
            if isinstance(exc, TrainingDiverged):
                checkpoints.clear()
            mlflow.end_run("FAILED")
            raise
    checkpoints.clear()
    return metrics
