"""Per-epoch checkpoints that a killed run resumes from, with early stopping whose state survives the restart.

Keras' BackupAndRestore and EarlyStopping each keep part of the state in memory (patience, best weights), so a
restarted run would forget them; here everything lives in files and is derived from the saved history.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras

from catdog.common.files import write_json
from catdog.train.state_file import STATE_FILE

History = dict[str, list[float]]


@dataclass
class State:
    """What a restarted run needs: the config it belongs to, its MLflow run, its history, phase and time so far, and
    the states of the model's random seed generators, which the model file leaves out (see `seed_variables`)."""

    fingerprint: str
    run_id: str
    seconds: float = 0.0
    phase: int = 0
    phase_start: int = 0
    history: History = field(default_factory=dict)
    model_file: str | None = None
    best_file: str | None = None
    seeds: list[list[int]] = field(default_factory=list)

    @property
    def epochs_done(self) -> int:
        return len(self.history.get("loss", []))


class Checkpoints:
    """A folder of checkpoint files and `state.json`, which is replaced atomically and names only complete files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def load(self, fingerprint: str) -> State | None:
        """The saved state if it belongs to the same config, else None."""
        path = self.directory / STATE_FILE
        if not path.is_file():
            return None
        state = State(**json.loads(path.read_text(encoding="utf-8")))
        return state if state.fingerprint == fingerprint else None

    def path(self, name: str | None) -> Path | None:
        return self.directory / name if name else None

    def save(self, state: State, model: keras.Model, *, improved: bool) -> None:
        """Write the model (and the best weights when `improved`), then point `state.json` at them."""
        self.directory.mkdir(parents=True, exist_ok=True)
        epoch = state.epochs_done
        model_file = f"epoch-{epoch:04d}.keras"
        model.save(self.directory / model_file)
        state.seeds = seed_states(model)
        if improved:
            best_file = f"best-{epoch:04d}.weights.h5"
            model.save_weights(self.directory / best_file)
            state.best_file = best_file
        state.model_file = model_file
        write_json(self.directory / STATE_FILE, state.__dict__)
        keep = {STATE_FILE, state.model_file, state.best_file}
        for stale in self.directory.iterdir():
            if stale.name not in keep:
                stale.unlink()

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def seed_variables(model: keras.Model) -> list[keras.Variable]:
    """The state variables of the model's random seed generators (dropout, augmentation), in layer order.

    Keras counts them among a model's `variables` but not its `weights`, and `model.save` stores only weights:
    `load_model` restarts each generator at draw 0 (and one seeded from Python's random module, like Dropout's
    without a seed, at a new seed), so without them a resumed run would draw other dropout masks and augmentations.
    """
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def seed_states(model: keras.Model) -> list[list[int]]:
    """Each seed generator's state: its seed and how many draws it made."""
    return [keras.ops.convert_to_numpy(v).tolist() for v in seed_variables(model)]


def restore_seed_states(model: keras.Model, states: list[list[int]]) -> None:
    """Set the model's seed generators to `states` (from `seed_states` of the same architecture)."""
    for variable, state in zip(seed_variables(model), states, strict=True):
        variable.assign(state)


def best_epoch(values: list[float]) -> int | None:
    """Index of the first maximum of the monitored value, or None before any epoch."""
    finite = [(v, -i) for i, v in enumerate(values) if math.isfinite(v)]
    return -max(finite)[1] if finite else None


class EpochEnd(keras.callbacks.Callback):
    """After each epoch: record the metrics, checkpoint, report, and stop when patience is spent or loss is NaN."""

    def __init__(
        self,
        checkpoints: Checkpoints,
        state: State,
        monitor: str,
        patience: int | None,
        report: Callable[[History], None],
        elapsed: Callable[[], float],
        saved: keras.Model | None = None,
    ) -> None:
        """`elapsed` gives the run's seconds so far, restarts included; `saved` is the model to checkpoint when it
        is not the one being fitted (a head on cached features)."""
        super().__init__()
        self.saved = saved
        self.elapsed = elapsed
        self.checkpoints = checkpoints
        self.state = state
        self.monitor = monitor
        self.patience = patience
        self.report = report
        self.diverged = False

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if logs and not math.isfinite(float(logs.get("loss", 0.0))):
            self.diverged = True
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.diverged:
            return
        for key, value in (logs or {}).items():
            self.state.history.setdefault(key, []).append(float(value))
        values = self.state.history[self.monitor]
        best = best_epoch(values)
        self.state.seconds = self.elapsed()
        self.checkpoints.save(self.state, self.saved or self.model, improved=best == len(values) - 1)
        self.report(self.state.history)
        last_good = max(best if best is not None else -1, self.state.phase_start - 1)
        if self.patience is not None and len(values) - 1 - last_good >= self.patience:
            self.model.stop_training = True
