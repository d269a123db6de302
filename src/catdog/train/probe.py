"""What the `auto` settings share (`autoprecision`, `onednn`): timing a few training steps of the run's own model, and
the cache of what was measured, keyed by the machine fingerprint and the workload.

The cache is one JSON file per setting in `$CATDOG_CACHE_DIR` (default `$XDG_CACHE_HOME/catdog/`, else
`~/.cache/catdog/`), written atomically; delete a file to measure again. A process that finds no entry measures under
a lock beside the file, so that runs starting together (a joblib sweep's jobs) measure once, one after another, and
the others read what it decided instead of timing each other's probes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from catdog.common.files import write_json
from catdog.common.machine import CPUINFO, ID_PARTS, fingerprint
from catdog.train.precision import policy

CACHE_ENV = "CATDOG_CACHE_DIR"
UNTIMED_STEPS = 2  # tracing, then the first allocations


def cache_file(name: str) -> Path:
    """Where decisions are kept: `$CATDOG_CACHE_DIR`, `$XDG_CACHE_HOME/catdog` or `~/.cache/catdog`."""
    folder = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "catdog"
    return Path(folder) / name


def read_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold `path`'s lock file (`<name>.lock` beside it) until the block ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f"{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cached(path: Path, key: str, measure: Callable[[], tuple[dict | None, bool]]) -> tuple[dict | None, bool]:
    """The entry `key` of the cache `path` and True, else `measure()`'s entry and False. `measure` says whether its
    entry is settled: only a settled one is stored; an unsettled one (or None: the measurement failed) serves this
    run, and the next one measures again."""
    with locked(path):
        entry = read_cache(path).get(key)
        if entry:
            return entry, True
        entry, settled = measure()
        if entry is not None and settled:
            write_json(path, {**read_cache(path), key: entry})
        return entry, False


def timings(seconds: Mapping[str, list[float]]) -> str:
    """Each setting's timed seconds per step, on one line: `on 0.0310, 0.0350; off 0.0570`."""
    return "; ".join(f"{k} {', '.join(f'{t:.4f}' for t in v)}" for k, v in seconds.items() if v)


def machine_parts(
    threads: int,
    precision: str | None,
    without: tuple[str, ...] = (),
    *,
    cpuinfo: Path = CPUINFO,
    environ: Mapping[str, str] = os.environ,
) -> dict[str, object]:
    """The parts of the machine fingerprint that change a run's numbers and speed (`ID_PARTS`: CPU kind, kernel
    flags, oneDNN on or off, versions, threads, precision), less those in `without`."""
    machine = fingerprint(threads, precision, cpuinfo=cpuinfo, environ=environ)
    parts = {k: machine[k] for k in ID_PARTS if k not in without}
    if "onednn" in parts:
        parts["onednn"] = machine["onednn"]["on"]  # type: ignore[index]
    return parts


def workload_key(cfg: DictConfig) -> dict[str, object]:
    """What shapes one training step: the model, augmentation, optimizer, image and batch size, weight averaging."""
    t = cfg.trainer
    return OmegaConf.to_container(
        OmegaConf.create(
            {
                "model": cfg.model,
                "augment": cfg.augment,
                "optimizer": cfg.optimizer._target_,
                "trainer": {k: t[k] for k in ("image_size", "batch_size", "ema_momentum", "jit_compile")},
            }
        ),
        resolve=True,
    )


def digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def seconds_per_step(model, dataset, budget_s: float, untimed: int = UNTIMED_STEPS) -> float:
    """Seconds per training step of a compiled `model` over `dataset` (repeating), from the end of its `untimed`-th
    step until `budget_s` seconds later (at least one more step)."""
    import keras

    class Clock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.ends: list[tuple[int, float]] = []

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.ends.append((batch, time.perf_counter()))
            timed = self.ends[untimed - 1 :]
            if len(timed) >= 2 and timed[-1][1] - timed[0][1] >= budget_s:
                self.model.stop_training = True

    clock = Clock()
    model.fit(dataset, steps_per_epoch=1_000_000, epochs=1, callbacks=[clock], verbose=0)
    (first, start), (last, end) = clock.ends[untimed - 1], clock.ends[-1]
    return (end - start) / (last - first)


def probe_model(cfg: DictConfig, precision: str):
    """The run's model and optimizer in `precision`, compiled one step per call (so that a step can be timed)."""
    from catdog.train.fit import compile_model, make_optimizer
    from catdog.train.models import build_model

    with policy(precision):
        model = build_model(cfg, num_classes=len(cfg.data.classes))
        probe = OmegaConf.merge(cfg, {"trainer": {"steps_per_execution": 1}})
        compile_model(model, probe, make_optimizer(cfg, steps=1000))
    return model


def probe_batches(cfg: DictConfig):
    """One batch of random pixels and labels, repeated: the probe times compute, not the input pipeline."""
    import numpy as np
    import tensorflow as tf

    size, batch, classes = cfg.trainer.image_size, cfg.trainer.batch_size, len(cfg.data.classes)
    rng = np.random.default_rng(0)  # its own generator: the run's seeded streams stay untouched
    images = rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")
    return tf.data.Dataset.from_tensors((images, np.arange(batch) % classes)).repeat()
