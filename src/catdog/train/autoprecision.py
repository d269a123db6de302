"""`trainer.precision=auto` by measurement: time a few training steps of the run's own model in float32 and in
bfloat16, interleaved, and train in the faster; remember the decision per machine, TensorFlow version and model.

A CPU flag says what a CPU can do, not what is faster on it: the same `model name` string covers CPUs with and
without `avx512_bf16`, and where bfloat16 is native it still loses on some models. The decision is cached in
`$CATDOG_CACHE_DIR/precision.json` (default `$XDG_CACHE_HOME/catdog/`, else `~/.cache/catdog/`), written
atomically; delete the file to measure again.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from catdog.common.files import write_json
from catdog.common.machine import cpu_flags, cpu_model, cpuinfo_field
from catdog.train.precision import CPU_FLAGS, POLICIES, policy

CACHE_ENV = "CATDOG_CACHE_DIR"
CACHE_NAME = "precision.json"
BUDGET_S = 0.5  # timed seconds per precision and round, after the untimed first steps
ROUNDS = 2  # float32, bfloat16, float32, bfloat16: each precision's best round counts
UNTIMED_STEPS = 2  # tracing, then the first allocations
# bfloat16 must be this much faster to be chosen: float32's numbers are the ones that match across machines, and a
# shared machine's noise should not flip a tie.
MARGIN = 1.05


@dataclass(frozen=True)
class Decision:
    """What `auto` resolved to, why (`measured` or `cached`), and both precisions' seconds per step."""

    precision: str
    source: str
    seconds_per_step: dict[str, float]

    def tags(self) -> dict[str, str]:
        return {"precision_auto": self.source}

    def metrics(self) -> dict[str, float]:
        return {f"precision_probe_{p}_ms_per_step": round(s * 1000, 3) for p, s in self.seconds_per_step.items()}


def cache_file() -> Path:
    """Where decisions are kept: `$CATDOG_CACHE_DIR`, `$XDG_CACHE_HOME/catdog` or `~/.cache/catdog`."""
    folder = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "catdog"
    return Path(folder) / CACHE_NAME


def machine_key() -> dict[str, str]:
    """The machine as far as speed goes: CPU model name, its family/model/stepping and bfloat16 flags (one name
    string covers CPUs with and without them), visible GPUs, TensorFlow's version."""
    import tensorflow as tf

    ids = "/".join(cpuinfo_field((f,)) or "?" for f in ("cpu family", "model", "stepping"))
    gpus = tf.config.list_physical_devices("GPU")
    return {
        "cpu": f"{cpu_model()} ({ids}; {' '.join(sorted(cpu_flags() & set(CPU_FLAGS))) or 'no bf16 flags'})",
        "gpus": ", ".join(tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus),
        "machine": platform.machine(),
        "tensorflow": tf.__version__,
    }


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


def cache_key(cfg: DictConfig) -> str:
    text = json.dumps({"machine": machine_key(), "workload": workload_key(cfg)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def seconds_per_step(model, dataset, budget_s: float = BUDGET_S, untimed: int = UNTIMED_STEPS) -> float:
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


def measure(cfg: DictConfig, rounds: int = ROUNDS, budget_s: float = BUDGET_S) -> dict[str, float]:
    """Each precision's best seconds per step over `rounds` interleaved timings of the run's model.

    Keras' session is cleared afterwards (the probe's models and layer names leave no trace in the run) and the
    global dtype policy, which clearing resets, restored.
    """
    import keras

    previous = keras.mixed_precision.global_policy()
    try:
        models = {p: probe_model(cfg, p) for p in POLICIES}
        data = probe_batches(cfg)
        best = {p: float("inf") for p in models}
        for _ in range(rounds):
            for p, model in models.items():
                best[p] = min(best[p], seconds_per_step(model, data, budget_s))
    finally:
        keras.backend.clear_session()
        keras.mixed_precision.set_global_policy(previous)
    return best


def faster(seconds: dict[str, float]) -> str:
    """bfloat16 where it is at least `MARGIN` times faster than float32, else float32."""
    return "bfloat16" if seconds["float32"] >= MARGIN * seconds["bfloat16"] else "float32"


def read_cache(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def choose(cfg: DictConfig) -> Decision:
    """`auto`'s precision for this run: the cached decision for this machine and model, else measured and cached."""
    path, key = cache_file(), cache_key(cfg)
    entry = read_cache(path).get(key)
    if entry:
        return Decision(entry["precision"], "cached", entry["seconds_per_step"])
    seconds = measure(cfg)
    decision = Decision(faster(seconds), "measured", {p: round(s, 6) for p, s in seconds.items()})
    entry = {**asdict(decision), **machine_key(), "model": cfg.model.name, "when": datetime.now(UTC).isoformat()}
    # Read again just before writing: a run that measured meanwhile keeps its entry (a lost race only re-measures).
    write_json(path, {**read_cache(path), key: entry})
    return decision
