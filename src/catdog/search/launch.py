"""A trial's seeds as training runs: `src/train.py --multirun ... seed=choice(42,1)` in a child process group,
through the launcher the search was given (Hydra's basic one: one seed after another; joblib: in parallel; Slurm:
on the cluster), each seed's outputs in `<trial folder>/seed-<s>/`. While it trains, the launch is watched: each
seed's per-epoch state (the `state.json` its checkpoints keep) and each finished seed's result are handed to a
callback, which may stop the whole process group (a pruned trial)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from catdog.common.processes import DIE_WITH_PARENT_ENV, stop_group
from catdog.settings.project import project_dir
from catdog.settings.run_files import Outputs
from catdog.train.dead_runs import METRIC
from catdog.train.state_file import STATE_FILE

# Linux: the training command gets SIGTERM when the search dies (`kill -9` included), and each joblib worker when
# the command does, so no orphan trains on into the checkpoints a retried trial resumes from; it exits at once if
# the search is already gone.
DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"
    "os.getppid() == int(sys.argv[1]) or os._exit(1)\n"
    f"os.environ['{DIE_WITH_PARENT_ENV}'] = '1'  # its sweep's workers die with it (catdog.common.processes)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)
JOBLIB = "hydra/launcher=joblib"
N_JOBS = "hydra.launcher.n_jobs"
# How every entry point reports a user's mistake: `<kind> error: <one line>` (catdog.common.errors).
USER_ERROR_LINE = re.compile(r"^[a-z][a-z ]* error: ")
POLL_S = 5.0
MONITOR = "val_accuracy"


class TrialFailed(Exception):
    """A trial's training command failed (a diverged run, a crash): the trial counts as failed, the search goes on."""


class Stopped(Exception):
    """The watcher stopped the launch (its process group is gone)."""


@dataclass(frozen=True)
class SeedResult:
    """What one seed's training run left: its best val accuracy, whether it learned, its MLflow run, how many
    epochs and seconds it trained, and the id of the machine fingerprint it trained on."""

    seed: int
    best_val_accuracy: float
    did_not_learn: bool
    run_id: str | None
    epochs: int = 0
    seconds: float = 0.0
    machine: str | None = None

    def attrs(self) -> dict:
        """The result as the trial's user attribute `seed_<s>` (the journal keeps it)."""
        return {k: v for k, v in self.__dict__.items() if k != "seed"}

    @classmethod
    def from_attrs(cls, seed: int, attrs: dict) -> SeedResult:
        return cls(seed, **attrs)


@dataclass(frozen=True)
class InFlight:
    """A seed still training: its val accuracy per epoch so far and its MLflow run (None before its first epoch)."""

    history: list[float]
    run_id: str | None


Watch = Callable[[dict[int, SeedResult], dict[int, InFlight]], bool]


def sized(train_args: list[str], seeds: list[int]) -> list[str]:
    """With the joblib launcher, no more jobs at once than seeds."""
    if JOBLIB not in train_args:
        return train_args
    asked = [a for a in train_args if a.startswith(f"{N_JOBS}=")]
    n_jobs = int(asked[-1].split("=", 1)[1]) if asked else -1  # joblib's default: one per core
    n_jobs = n_jobs if n_jobs > 0 else (os.cpu_count() or 1) + 1 + n_jobs
    return [a for a in train_args if a not in asked] + [f"{N_JOBS}={min(n_jobs, len(seeds))}"]


def command(train_args: list[str], seeds: list[int], trial_dir: Path) -> list[str]:
    """The training command of `seeds`: a Hydra multirun over the seeds, each job in `<trial_dir>/seed-<s>/`."""
    seed_sweep = f"seed=choice({','.join(map(str, seeds))})"  # a sweep even for one seed: names end in seed=<s>
    argv = [str(project_dir() / "src" / "train.py"), "--multirun", *sized(train_args, seeds), seed_sweep]
    argv += [f"hydra.sweep.dir={trial_dir}", "hydra.sweep.subdir=seed-${seed}"]
    if sys.platform == "linux":
        return [sys.executable, "-c", DIE_WITH_PARENT, str(os.getpid()), *argv]
    return [sys.executable, *argv]


def read_result(job_dir: Path, seed: int) -> SeedResult | None:
    """A finished seed's result from its job folder (metrics.json, and run.json: the run's record), or None. A seed
    is finished once its record is written: the run writes it last (catdog.train.outputs.write_outputs), seconds
    after metrics.json, and a result read in between would lack the run's id and machine."""
    outputs = Outputs.in_folder(job_dir)
    if not (outputs.metrics.is_file() and outputs.record.is_file()):
        return None
    metrics = json.loads(outputs.metrics.read_text(encoding="utf-8"))
    record = json.loads(outputs.record.read_text(encoding="utf-8"))
    return SeedResult(
        seed,
        float(metrics["best_val_accuracy"]),
        bool(metrics.get(METRIC, 0)),
        record.get("mlflow", {}).get("run_id"),
        int(metrics.get("epochs_run", 0)),
        float(metrics.get("seconds", 0.0)),
        record.get("machine", {}).get("id"),
    )


def in_flight(checkpoint_dir: Path) -> InFlight:
    """A training seed's progress from its checkpoints' state file (none yet: no epoch done)."""
    try:
        state = json.loads((checkpoint_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # not written yet (the file is replaced atomically, never half-written)
        return InFlight([], None)
    return InFlight([float(v) for v in state.get("history", {}).get(MONITOR, [])], state.get("run_id"))


def reason(log: Path) -> str:
    """Why a training command failed, from its log: the last user-error line, else its last line."""
    lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if USER_ERROR_LINE.match(line)]
    return (errors or lines or ["no output"])[-1][:500]


def launch(
    train_args: list[str], checkpoints: dict[int, Path], trial_dir: Path, watch: Watch, poll_s: float = POLL_S
) -> dict[int, SeedResult]:
    """Train the seeds of `checkpoints` (seed → its checkpoint folder) with `train_args`, calling `watch` with the
    finished seeds' results and the others' progress every `poll_s` seconds and once at the end; their results.
    Stopped when `watch` says stop (the process group is gone by then); TrialFailed naming the cause and the log
    (`<trial_dir>/train.log`) when any seed did not finish."""
    seeds = list(checkpoints)
    trial_dir.mkdir(parents=True, exist_ok=True)
    log = trial_dir / "train.log"

    def look() -> tuple[dict[int, SeedResult], dict[int, InFlight]]:
        done = {s: r for s in seeds if (r := read_result(trial_dir / f"seed-{s}", s)) is not None}
        return done, {s: in_flight(checkpoints[s]) for s in seeds if s not in done}

    with open(log, "a", encoding="utf-8") as out:
        process = subprocess.Popen(
            command(train_args, seeds, trial_dir), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            while process.poll() is None:
                time.sleep(poll_s)
                if process.poll() is None and watch(*look()):
                    stop_group(process.pid)
                    process.wait()
                    raise Stopped
        finally:
            if process.poll() is None:  # the search itself is stopping (an error, Ctrl-C): take the training along
                stop_group(process.pid)
                process.wait()
    done, left = look()
    if process.returncode != 0 or left:
        raise TrialFailed(
            f"seeds {', '.join(map(str, left)) or 'all done'}: src/train.py exited with {process.returncode} "
            f"({reason(log)}); see {log}"
        )
    watch(done, {})
    return done
