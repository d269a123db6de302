"""The training phases of a run: the optimizer, the fit of each phase, and the model a resumed run continues."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import keras
import tensorflow as tf
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from catdog.common.errors import UserError
from catdog.data.dataset import EpochClock, Split, batches, features
from catdog.train.checkpoints import Checkpoints, EpochEnd, State, restore_seed_states
from catdog.train.models import build_model, frozen_parts, unfreeze_backbone
from catdog.train.outputs import MONITOR
from catdog.train.run_log import log_pending_epochs

LEARNING_RATE = "optimizer.learning_rate"
FINE_TUNE_RATE = "model.fine_tune.learning_rate"


class TrainingDiverged(UserError, RuntimeError):
    """The loss became NaN or infinite: the message names the run and the learning rate to lower."""

    kind = "training error"


def diverged(cfg: DictConfig, epoch: int, rate_key: str) -> TrainingDiverged:
    rate = OmegaConf.select(cfg, rate_key)
    return TrainingDiverged(
        f"run {cfg.name!r}: the loss became non-finite in epoch {epoch} with {rate_key}={rate:g}; lower it "
        f"(e.g. `{rate_key}={rate / 10:g}`) and run the command again"
    )


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


def fit_phase(
    model: keras.Model,
    train: tf.data.Dataset,
    val: tf.data.Dataset,
    clock: EpochClock,
    epochs: int,
    callback: EpochEnd,
    cfg: DictConfig,
    rate_key: str = LEARNING_RATE,
) -> None:
    """Fit from the epochs done up to `epochs`, `clock` telling `train` which epoch's order to serve; a loss gone
    non-finite blames `rate_key`."""
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
        raise diverged(cfg, callback.state.epochs_done + 1, rate_key)


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
        fit_phase(head, *inputs(cfg, data, extractor), t.epochs, epoch_end(saved=model), cfg)
    elif state.phase == 0:
        fit_phase(model, *inputs(cfg, data), t.epochs, epoch_end(), cfg)
    fine_tune = cfg.model.get("fine_tune")
    if not (fine_tune and fine_tune.enabled):
        return
    if state.phase == 0:
        restore_best(model, checkpoints, state)
        unfreeze_backbone(model, fine_tune.from_layer)
        optimizer = make_optimizer(cfg, fine_tune.epochs * steps_per_epoch(cfg, data), fine_tune.learning_rate)
        compile_model(model, cfg, optimizer)
        state.phase, state.phase_start = 1, state.epochs_done
    fit_phase(model, *inputs(cfg, data), state.phase_start + fine_tune.epochs, epoch_end(), cfg, FINE_TUNE_RATE)


def restore_best(model: keras.Model, checkpoints: Checkpoints, state: State) -> None:
    best = checkpoints.path(state.best_file)
    if best is not None:
        model.load_weights(best)


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
