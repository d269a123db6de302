"""`trainer.precision=auto` by measurement: time a few training steps of the run's own model in float32 and in
bfloat16, interleaved, and train in the faster; remember the decision per machine fingerprint and workload.

A CPU flag says what a CPU can do, not what is faster on it: the same `model name` string covers CPUs with and
without `avx512_bf16`, and where bfloat16 is native it still loses on some models. The decision is cached
(`catdog.train.probe`) in `$CATDOG_CACHE_DIR/precision.json` (default `~/.cache/catdog/`), keyed by the machine
fingerprint without the precision (CPU kind and kernel flags, oneDNN on or off, TensorFlow's and Keras' versions, the
run's threads), the visible GPUs and the workload (`probe.workload_key`); delete the file to measure again. Only a
settled decision is cached: where the rounds disagree (the machine's load moved under the probe), the run trains in
float32 and the next run measures again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from omegaconf import DictConfig

from catdog.common.machine import CPUINFO, available_cores, fingerprint, words
from catdog.train.precision import POLICIES
from catdog.train.probe import (
    CACHE_ENV,
    cache_file,
    cached,
    digest,
    machine_parts,
    probe_batches,
    probe_model,
    seconds_per_step,
    timings,
    workload_key,
)

log = logging.getLogger(__name__)

__all__ = ["CACHE_ENV", "CACHE_NAME", "Decision", "best", "cache_key", "choose", "faster", "measure", "settled"]

CACHE_NAME = "precision.json"
BUDGET_S = 0.5  # timed seconds per precision and round, after the untimed first steps
ROUNDS = 2  # float32, bfloat16, float32, bfloat16: each precision's best round counts
# bfloat16 must be this much faster to be chosen: float32's numbers are the ones that match across machines, and a
# shared machine's noise should not flip a tie.
MARGIN = 1.05


@dataclass(frozen=True)
class Decision:
    """What `auto` resolved to, why (`measured`, `cached`, or `unsettled`: float32, where the rounds disagreed), and
    both precisions' best seconds per step."""

    precision: str
    source: str
    seconds_per_step: dict[str, float]

    def tags(self) -> dict[str, str]:
        return {"precision_auto": self.source}

    def metrics(self) -> dict[str, float]:
        return {f"precision_probe_{p}_ms_per_step": round(s * 1000, 3) for p, s in self.seconds_per_step.items()}


def run_threads() -> int:
    """The threads TensorFlow's pools run with in this process (0, TensorFlow's default, is every core)."""
    import tensorflow as tf

    return tf.config.threading.get_intra_op_parallelism_threads() or available_cores()


def gpus() -> str:
    """The visible GPUs by name (empty on a CPU)."""
    import tensorflow as tf

    found = tf.config.list_physical_devices("GPU")
    return ", ".join(tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in found)


def cache_key(
    cfg: DictConfig, threads: int, *, cpuinfo: Path = CPUINFO, environ: Mapping[str, str] = os.environ
) -> str:
    """The decision's key: the machine fingerprint of a run with `threads` (oneDNN's state included, the precision it
    decides left out), the visible GPUs, and the workload."""
    machine = machine_parts(threads, None, ("precision",), cpuinfo=cpuinfo, environ=environ)
    return digest({"machine": machine, "gpus": gpus(), "workload": workload_key(cfg)})


def measure(cfg: DictConfig, rounds: int = ROUNDS, budget_s: float = BUDGET_S) -> dict[str, list[float]]:
    """Each precision's seconds per step in each of `rounds` interleaved timings of the run's model.

    Keras' session is cleared afterwards (the probe's models and layer names leave no trace in the run) and the
    global dtype policy, which clearing resets, restored.
    """
    import keras

    previous = keras.mixed_precision.global_policy()
    try:
        models = {p: probe_model(cfg, p) for p in POLICIES}
        data = probe_batches(cfg)
        timed: dict[str, list[float]] = {p: [] for p in models}
        for _ in range(rounds):
            for p, model in models.items():
                timed[p].append(seconds_per_step(model, data, budget_s))
    finally:
        keras.backend.clear_session()
        keras.mixed_precision.set_global_policy(previous)
    return timed


def best(seconds: dict[str, list[float]]) -> dict[str, float]:
    """Each precision's fastest round."""
    return {p: min(rounds) for p, rounds in seconds.items()}


def faster(seconds: dict[str, float]) -> str:
    """bfloat16 where it is at least `MARGIN` times faster than float32, else float32."""
    return "bfloat16" if seconds["float32"] >= MARGIN * seconds["bfloat16"] else "float32"


def settled(seconds: dict[str, list[float]]) -> bool:
    """Whether every round, taken alone, gives the answer of the best rounds: rounds that disagree measured a load
    that moved under the probe, not the machine, and their answer is not cached."""
    rounds = zip(*seconds.values(), strict=True)
    return {faster(dict(zip(seconds, r, strict=True))) for r in rounds} == {faster(best(seconds))}


def choose(cfg: DictConfig, threads: int | None = None) -> Decision:
    """`auto`'s precision for this run, which trains with `threads` (None: as this process's thread pools run): the
    cached decision for this machine fingerprint and workload, else measured and cached."""
    threads = threads or run_threads()

    def measured() -> tuple[dict, bool]:
        seconds = measure(cfg)
        fastest = {p: round(s, 6) for p, s in best(seconds).items()}
        steady = settled(seconds)
        if not steady:
            log.warning(
                "precision auto: the rounds disagree (the machine's load moved?): float32 for this run, not cached; "
                "the next run measures again (seconds per step: %s)",
                timings(seconds),
            )
        decision = Decision(faster(fastest) if steady else "float32", "measured" if steady else "unsettled", fastest)
        machine = words(fingerprint(threads))
        when = datetime.now(UTC).isoformat()
        return {**asdict(decision), "machine": machine, "model": cfg.model.name, "when": when}, steady

    entry, hit = cached(cache_file(CACHE_NAME), cache_key(cfg, threads), measured)
    return Decision(entry["precision"], "cached" if hit else entry["source"], entry["seconds_per_step"])
