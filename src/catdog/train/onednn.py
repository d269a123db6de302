"""`trainer.onednn`: whether TensorFlow runs its oneDNN kernels, decided before TensorFlow is imported.

TensorFlow reads `TF_ENABLE_ONEDNN_OPTS` once, as it is imported, and turns oneDNN on by default only on x86 CPUs with
AVX-512 VNNI, bfloat16 or AMX flags (`catdog.common.machine.onednn_state`). Which is faster depends on the CPU and the
model, so, as for the precision:

- `on` / `off`: the run sets `TF_ENABLE_ONEDNN_OPTS` to 1 / 0.
- `auto`: a few training steps of the run's own model are timed with oneDNN on and off, each in a child process of its
  own (one process cannot switch). The run leaves TensorFlow's default only where the other setting was faster in
  two pairs of children (the second pair in reverse order), each time by at least `MARGIN` and by more than the
  noise (the spread between its two children, which ran back to back): `auto` is never slower than the default by
  more than the noise. The decision is cached (`catdog.train.probe`) in `onednn.json`, keyed by the machine
  fingerprint without its oneDNN part (CPU kind and kernel flags, versions, threads, precision) and the workload,
  once it is settled: pairs that disagree (the machine's load moved under the probe) keep the default for this run
  only, and the next run measures again.
- `TF_ENABLE_ONEDNN_OPTS` set in the environment wins over the setting (the run warns where they disagree).

src/train.py calls `apply` before anything imports TensorFlow; the run records `decision()` (its tags and metrics).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from catdog.common.machine import CPUINFO, ONEDNN_ENV, cpu_flags, fingerprint, onednn_state, words
from catdog.train.probe import (
    UNTIMED_STEPS,
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
from catdog.train.threads import thread_count

log = logging.getLogger(__name__)

# The value this project set TF_ENABLE_ONEDNN_OPTS to, so that a child process tells it from the user's own.
SET_ENV = "CATDOG_ONEDNN_SET"
CACHE_NAME = "onednn.json"
BUDGET_S = 1.0  # timed seconds per round in a probe child, after the untimed first steps
ROUNDS = 2  # per child; its best round counts
MARGIN = 1.05  # the other setting must be this much faster in every pair of children
CHILD_TIMEOUT_S = 900


def name(on: bool) -> str:
    return "on" if on else "off"


@dataclass(frozen=True)
class Decision:
    """oneDNN on or off for this run; the `setting` asked for; why (`measured`, `cached`, `setting`, `environment`: the
    user's TF_ENABLE_ONEDNN_OPTS, `process`: TensorFlow already ran here, `default`: TensorFlow's choice for the CPU,
    `unsettled`: the default, where the probe's two pairs disagreed); each probe child's best seconds per step."""

    on: bool
    setting: str
    source: str
    seconds_per_step: dict[str, list[float]] = field(default_factory=dict)

    def tags(self) -> dict[str, str]:
        return {"onednn": name(self.on), "onednn_setting": self.setting, "onednn_decision": self.source}

    def metrics(self) -> dict[str, float]:
        return {f"onednn_probe_{k}_ms_per_step": round(min(v) * 1000, 3) for k, v in self.seconds_per_step.items()}


_APPLIED: Decision | None = None


def users_setting(environ: Mapping[str, str] = os.environ) -> str | None:
    """TF_ENABLE_ONEDNN_OPTS as the user set it (None: unset, or set by this project in a parent process)."""
    value = environ.get(ONEDNN_ENV)
    return None if value is None or value == environ.get(SET_ENV) else value


def tensorflow_runs_onednn() -> bool:
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def _fixed(setting: str) -> Decision | None:
    """The decision where the setting has no say: the user's variable, or TensorFlow already imported here."""
    if users_setting() is not None:
        found = Decision(onednn_state(cpu_flags())["on"], setting, "environment")
    elif "tensorflow" in sys.modules:
        found = Decision(tensorflow_runs_onednn(), setting, "process")
    else:
        return None
    if setting != "auto" and (setting == "on") != found.on:
        why = (
            f"{ONEDNN_ENV}={os.environ[ONEDNN_ENV]} in the environment wins"
            if found.source == "environment"
            else "TensorFlow already runs in this process (an earlier job of the sweep) and keeps its kernels"
        )
        log.warning("trainer.onednn=%s not applied: %s; oneDNN is %s", setting, why, name(found.on))
    return found


def apply(cfg: DictConfig) -> Decision:
    """Decide `cfg.trainer.onednn` for this process and set TF_ENABLE_ONEDNN_OPTS accordingly, before TensorFlow is
    imported (auto measures, or reads the cache)."""
    global _APPLIED
    found = _fixed(str(cfg.trainer.onednn))
    if found is None:
        found = wanted(cfg)
        os.environ[ONEDNN_ENV] = os.environ[SET_ENV] = "1" if found.on else "0"
    _APPLIED = found
    return found


def wanted(cfg: DictConfig) -> Decision:
    """The state `trainer.onednn` asks for a run of `cfg`: `on`/`off` as set, `auto` as `choose` decides."""
    setting = str(cfg.trainer.onednn)
    return Decision(setting == "on", setting, "setting") if setting != "auto" else choose(cfg)


def decision() -> Decision:
    """What `apply` decided in this process; where it was not called (a run started from Python), what TensorFlow
    runs and why."""
    return _APPLIED or _fixed("auto") or Decision(onednn_state(cpu_flags())["on"], "auto", "default")


def probe_precision(cfg: DictConfig) -> str:
    """The precision the probe times: the run's, float32 where `auto` decides it later."""
    return cfg.trainer.precision if cfg.trainer.precision in ("float32", "bfloat16") else "float32"


def cache_key(
    cfg: DictConfig, threads: int, *, cpuinfo: Path = CPUINFO, environ: Mapping[str, str] = os.environ
) -> str:
    """The decision's key: the fingerprint of a run with `threads` less its oneDNN part, and the workload."""
    machine = machine_parts(threads, probe_precision(cfg), ("onednn",), cpuinfo=cpuinfo, environ=environ)
    return digest({"machine": machine, "workload": workload_key(cfg)})


def faster(seconds: dict[str, list[float]], default: bool) -> bool:
    """oneDNN's state: the non-default where each pair of children found it at least `MARGIN` times faster and by more
    than the noise, else the default. The children ran default, other, other, default: the two of the other state ran
    back to back, and how far apart they are is the noise of one child's timing (a drift of the machine's load
    over the four hits both states of a pair alike)."""
    ours, other = seconds.get(name(default), []), seconds.get(name(not default), [])
    if len(ours) < 2 or len(other) < 2:
        return default
    noise = max(other) / min(other) - 1
    worst = min(d / o for d, o in zip(ours, other, strict=True))
    return (not default) if worst >= max(MARGIN, 1 + noise) else default


def settled(seconds: dict[str, list[float]], default: bool) -> bool:
    """Whether `faster`'s answer may be cached: one pair that left the default unbeaten, or two that both beat it. A
    second pair is timed only after the other state won the first, so a second pair that keeps the default
    disagrees with the first: a load that moved under the probe (beside a test suite, the other state measured 1.1x
    and 2.8x faster), not the machine's answer."""
    return len(seconds.get(name(not default), [])) < 2 or faster(seconds, default) != default


def probe(cfg: DictConfig, threads: int, on: bool) -> float | None:
    """The run's model's best seconds per step with oneDNN `on`, timed in a child process (None: it failed)."""
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "config.yaml"
        config.write_text(OmegaConf.to_yaml(cfg, resolve=True), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k != SET_ENV}
        env |= {ONEDNN_ENV: "1" if on else "0", "TF_CPP_MIN_LOG_LEVEL": "3"}
        argv = [sys.executable, "-m", "catdog.train.onednn", str(config), probe_precision(cfg), str(threads)]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if done.returncode == 0 and lines else None
    if result is None or result["on"] != on:
        why = (done.stderr.strip().splitlines() or ["no output"])[-1] if result is None else "TensorFlow ignored it"
        log.warning("oneDNN probe with %s=%d failed (%s); TensorFlow's default kept", ONEDNN_ENV, on, why)
        return None
    return min(result["seconds"])


def measure(cfg: DictConfig, threads: int, default: bool) -> dict[str, list[float]] | None:
    """Each state's best seconds per step, one child per state and pair: the default's first; a second pair, in
    reverse order, only where the other state was at least `MARGIN` times faster in the first. None: a child failed."""
    seconds: dict[str, list[float]] = {"on": [], "off": []}
    pairs = ([default, not default], [not default, default])
    for pair in pairs:
        for on in pair:
            taken = probe(cfg, threads, on)
            if taken is None:
                return None
            seconds[name(on)].append(taken)
        if seconds[name(default)][0] < MARGIN * seconds[name(not default)][0]:
            break
    return seconds


def choose(cfg: DictConfig, threads: int | None = None) -> Decision:
    """`auto`'s state for a run of `cfg` with `threads` (None: as the run will size its pools): cached per
    fingerprint and workload, else measured (and cached once settled; not where a probe failed)."""
    threads = threads or thread_count(cfg.trainer.threads)
    default = onednn_state(cpu_flags(), {})["on"]

    def measured() -> tuple[dict | None, bool]:
        log.info("oneDNN: timing %s with oneDNN on and off (once per machine and workload)", cfg.model.name)
        seconds = measure(cfg, threads, default)
        if seconds is None:
            return None, False
        on, steady = faster(seconds, default), settled(seconds, default)
        machine = words(fingerprint(threads, probe_precision(cfg), environ={}))
        log.info(
            "oneDNN %s (TensorFlow's default here: %s); seconds per step: %s", name(on), name(default), timings(seconds)
        )
        if not steady:
            log.warning(
                "oneDNN: the two timings disagree (the machine's load moved?): %s for this run, not cached; the next "
                "run measures again (trainer.onednn=on or off skips the timing)",
                name(on),
            )
        source = "measured" if steady else "unsettled"
        entry = {"on": on, "seconds_per_step": seconds, "machine": machine, "when": datetime.now(UTC).isoformat()}
        return {**entry, "source": source}, steady

    entry, hit = cached(cache_file(CACHE_NAME), cache_key(cfg, threads), measured)
    if entry is None:
        return Decision(default, "auto", "default")
    return Decision(entry["on"], "auto", "cached" if hit else entry["source"], entry["seconds_per_step"])


def probe_child(config: str, precision: str, threads: str) -> None:
    """In the child: time the model of `config` in `precision` on `threads` threads; print oneDNN's state and each
    round's seconds per step as one JSON line."""
    from catdog.train.threads import size_thread_pools

    size_thread_pools(int(threads))
    cfg = OmegaConf.load(config)
    model, data = probe_model(cfg, precision), probe_batches(cfg)
    seconds = [seconds_per_step(model, data, BUDGET_S, UNTIMED_STEPS if i == 0 else 1) for i in range(ROUNDS)]
    print(json.dumps({"on": tensorflow_runs_onednn(), "seconds": seconds}))


if __name__ == "__main__":
    probe_child(*sys.argv[1:])
