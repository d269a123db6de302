"""A trial's seeds as training runs: `src/train.py --multirun ... seed=choice(42,1)` in a child process, through
the launcher the search was given (Hydra's basic one: one seed after another; joblib: in parallel; Slurm: on the
cluster), each seed's outputs in `<trial folder>/seed-<s>/`, read back once the command ends."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from catdog.settings.project import project_dir
from catdog.settings.run_files import Outputs
from catdog.train.dead_runs import METRIC

# Linux: the training command gets SIGTERM when the search dies (`kill -9` included), so no orphan trains on into
# the checkpoints a retried trial resumes from; it exits at once if the search is already gone.
DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"
    "os.getppid() == int(sys.argv[1]) or os._exit(1)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)
JOBLIB = "hydra/launcher=joblib"
N_JOBS = "hydra.launcher.n_jobs"
# How every entry point reports a user's mistake: `<kind> error: <one line>` (catdog.common.errors).
USER_ERROR_LINE = re.compile(r"^[a-z][a-z ]* error: ")


class TrialFailed(Exception):
    """A trial's training command failed (a diverged run, a crash): the trial counts as failed, the search goes on."""


@dataclass(frozen=True)
class SeedResult:
    """What one seed's training run left: its best val accuracy, whether it learned, its MLflow run."""

    seed: int
    best_val_accuracy: float
    did_not_learn: bool
    run_id: str | None


def sized(train_args: list[str], seeds: list[int]) -> list[str]:
    """With the joblib launcher, no more jobs at once than seeds: each seed of a smaller launch (the third of three
    on two cores) then gets its share of all the cores (trainer.threads=auto divides them by n_jobs)."""
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
    """A finished seed's result from its job folder (metrics.json, and run.json: the run's record), or None."""
    outputs = Outputs.in_folder(job_dir)
    if not outputs.metrics.is_file():
        return None
    metrics = json.loads(outputs.metrics.read_text(encoding="utf-8"))
    record = outputs.record
    run_id = json.loads(record.read_text(encoding="utf-8"))["mlflow"]["run_id"] if record.is_file() else None
    return SeedResult(seed, float(metrics["best_val_accuracy"]), bool(metrics.get(METRIC, 0)), run_id)


def reason(log: Path) -> str:
    """Why a training command failed, from its log: the last user-error line, else its last line."""
    lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if USER_ERROR_LINE.match(line)]
    return (errors or lines or ["no output"])[-1][:500]


def launch(train_args: list[str], seeds: list[int], trial_dir: Path) -> dict[int, SeedResult]:
    """Train `seeds` with `train_args`; their results, or TrialFailed naming the cause and the log
    (`<trial_dir>/train.log`) when any seed did not finish."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    log = trial_dir / "train.log"
    with open(log, "a", encoding="utf-8") as out:
        done = subprocess.run(command(train_args, seeds, trial_dir), stdout=out, stderr=subprocess.STDOUT, check=False)
    results = {s: r for s in seeds if (r := read_result(trial_dir / f"seed-{s}", s)) is not None}
    missing = [s for s in seeds if s not in results]
    if done.returncode != 0 or missing:
        raise TrialFailed(
            f"seeds {', '.join(map(str, missing)) or 'all done'}: src/train.py exited with {done.returncode} "
            f"({reason(log)}); see {log}"
        )
    return results
