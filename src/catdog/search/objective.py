"""One trial: draw its settings, check the config they compose to, train the seeds a few at a time through the
launcher, and score the mean best val accuracy over the seeds (never test).

While a launch trains, every epoch the seeds in it have all reached is reported to the pruner: the mean over the
trial's seeds of each one's best val accuracy so far (a finished seed's final best), at step `launch × epochs +
epoch`. When the pruner says stop, the launch's process group is stopped at once; the trial ends `pruned` at that
epoch, its training runs still in flight end KILLED in MLflow and their checkpoints are removed. A seed that did not
learn ends the trial the same way, as `did_not_learn`. A training command that fails (a diverged run) fails the
trial; the search goes on. Each seed's result is written to the trial as soon as it finishes, so the rerun of a
trial a kill cut short (on this machine or another) trains only the seeds it had not finished.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from omegaconf import DictConfig

from catdog.common.machine import fingerprint
from catdog.search.budget import OUTCOME, OVERRIDES, RETRY_OF, SURPLUS, Budget
from catdog.search.launch import InFlight, SeedResult, Stopped, TrialFailed, launch
from catdog.search.space import digest, overrides, suggest
from catdog.search.tracking import RUN_ATTR, Tracker
from catdog.train.dead_runs import TAG as DEAD_TAG

SEED_ATTR = "seed_{}"  # a finished seed's result (SeedResult.attrs)


class Surplus(Exception):
    """The trial started after the budget was spent (another worker took the last slot)."""


def groups(seeds: list[int], at_once: int) -> list[list[int]]:
    """The seeds in launch order, `at_once` per launch."""
    return [seeds[i : i + at_once] for i in range(0, len(seeds), at_once)]


def finished_seeds(study: optuna.Study, trial: optuna.Trial) -> dict[int, SeedResult]:
    """The seeds the trial this one reruns had finished (none for a first run)."""
    rerun = trial.user_attrs.get(RETRY_OF)
    if rerun is None:
        return {}
    before = study.get_trials(deepcopy=False)[rerun].user_attrs
    return {
        s: SeedResult.from_attrs(s, before[SEED_ATTR.format(s)])
        for s in study.user_attrs.get("seeds", [])
        if SEED_ATTR.format(s) in before
    }


@dataclass
class Progress:
    """Watches one launch of `group` for a trial: records each seed's result as it finishes, reports each epoch
    every seed of the launch reached, and says stop when the pruner does or a seed did not learn."""

    trial: optuna.Trial
    group: list[int]
    offset: int  # the step before this launch's first epoch
    epochs: int
    results: dict[int, SeedResult]  # the trial's finished seeds, this launch's added as they finish
    last_launch: bool
    reported: int = 0  # epochs of this launch reported so far
    seen: dict[int, list[float]] = field(default_factory=dict)
    runs: dict[int, str] = field(default_factory=dict)  # in-flight seeds' MLflow runs
    stop: str | None = None  # why the launch was stopped: "pruned" or did_not_learn

    def __call__(self, done: dict[int, SeedResult], flight: dict[int, InFlight]) -> bool:
        for seed, result in done.items():
            if seed not in self.results:
                self.results[seed] = result
                self.trial.set_user_attr(SEED_ATTR.format(seed), result.attrs())
                self.runs.pop(seed, None)
        for seed, state in flight.items():
            self.seen[seed] = state.history
            if state.run_id:
                self.runs[seed] = state.run_id
        if any(r.did_not_learn for r in done.values()):
            # The sampler still sees how low its settings scored: the mean of the finished seeds, one step on.
            self.trial.report(
                statistics.fmean(r.best_val_accuracy for r in self.results.values()), self.offset + self.reported + 1
            )
            self.stop = DEAD_TAG
            return True
        last = self.epochs if not flight else min(len(h.history) for h in flight.values())
        for epoch in range(self.reported + 1, min(last, self.epochs) + 1):
            self.trial.report(self.value(epoch), self.offset + epoch)
            self.reported = epoch
            if (flight or not self.last_launch) and self.trial.should_prune():
                self.stop = "pruned"
                return True
        return False

    def value(self, epoch: int) -> float:
        """The mean over the trial's seeds so far of each one's best val accuracy up to `epoch` of this launch."""
        values = []
        for seed in {*self.results, *self.group}:
            history = self.seen.get(seed, [])
            if seed in self.results and (seed not in self.group or len(history) < epoch):
                values.append(self.results[seed].best_val_accuracy)
            else:
                values.append(max(history[:epoch]))
        return statistics.fmean(values)


@dataclass
class Objective:
    """Optuna's objective for one search: `search` (its settings), `train_args` (the variant, inherited overrides,
    thread count and launcher of every trial's training command), `folder` (trial-<n>/ folders go there),
    `compose` (the config a trial's overrides give, checked: a setting out of range stops the search), `tracker`
    (MLflow), `budget` (whether a trial may start)."""

    search: DictConfig
    train_args: list[str]
    folder: Path
    compose: Callable[[list[str]], DictConfig]
    tracker: Tracker
    budget: Budget

    def __call__(self, trial: optuna.Trial) -> float:
        if not self.budget.admits(trial.study, trial.number):
            trial.set_user_attr(SURPLUS, True)
            raise Surplus(f"trial {trial.number}: the budget of {self.budget.n_trials} trials is spent")
        values = suggest(trial, self.search.space)
        trial.set_user_attr(OVERRIDES, values)
        try:
            cfg = self.compose(overrides(values))
        except Exception as exc:
            trial.set_user_attr(OUTCOME, "failed")  # counted, not retried: the space itself is wrong
            trial.set_user_attr("failure", str(exc))
            raise
        machine = fingerprint(cfg.trainer.threads, cfg.trainer.precision)
        trial.set_user_attr("machine", machine)
        run_id = self.tracker.start_trial(trial.number, values, machine)
        trial.set_user_attr(RUN_ATTR, run_id)
        name = f"{self.search.name}-{digest(self.search.variant, values, self.train_args)}"
        results = finished_seeds(trial.study, trial)
        for seed, result in results.items():
            trial.set_user_attr(SEED_ATTR.format(seed), result.attrs())
        started, killed = time.monotonic(), {}
        try:
            args = [*self.train_args, *overrides(values), f"name={name}"]
            return self._seeds(trial, args, cfg.trainer.epochs, results, killed)
        finally:
            trial.set_user_attr("seconds", round(time.monotonic() - started, 1))
            self.tracker.end_trial(run_id, trial, results, killed)
            print(line(trial, results), flush=True)

    def _seeds(
        self, trial: optuna.Trial, args: list[str], epochs: int, results: dict[int, SeedResult], killed: dict
    ) -> float:
        """Train the seeds launch by launch into `results`; the mean best val accuracy, or pruned, or failed."""
        launches = groups(list(self.search.seeds), self.search.seeds_at_once)
        for number, group in enumerate(launches):
            todo = [s for s in group if s not in results]
            progress = Progress(trial, group, number * epochs, epochs, results, number == len(launches) - 1)
            checkpoints = {s: self._checkpoint_dir(args, s) for s in todo}
            try:
                if todo:
                    launch(args, checkpoints, self.folder / f"trial-{trial.number}", progress, self.search.poll_s)
                else:
                    progress({}, {})
            except TrialFailed as exc:
                trial.set_user_attr(OUTCOME, "failed")
                trial.set_user_attr("failure", str(exc))
                raise
            except Stopped:
                pass
            if progress.stop:
                self._end_early(trial, progress, checkpoints, killed)
        trial.set_user_attr(OUTCOME, "complete")
        return statistics.fmean(r.best_val_accuracy for r in results.values())

    def _checkpoint_dir(self, args: list[str], seed: int) -> Path:
        """Where seed `seed` of a launch with `args` keeps its checkpoints: a sweep's job is named `<name>-seed=<s>`
        (catdog.settings.hydra_app.name_sweep_job), and its folder follows from the name."""
        own = args[len(self.train_args) :]
        name = next(a for a in reversed(own) if a.startswith("name=")).removeprefix("name=")
        return Path(self.compose([*own, f"name='{name}-seed={seed}'", f"seed={seed}"]).trainer.checkpoint_dir)

    def _end_early(self, trial: optuna.Trial, progress: Progress, checkpoints: dict[int, Path], killed: dict) -> None:
        """A launch stopped by the pruner or a dead seed: its runs in flight KILLED, their checkpoints removed."""
        for seed, run_id in progress.runs.items():
            killed[seed] = run_id
        for seed, folder in checkpoints.items():
            if seed not in progress.results:
                shutil.rmtree(folder, ignore_errors=True)
        trial.set_user_attr(OUTCOME, progress.stop)
        trial.set_user_attr("pruned_at", {"step": progress.offset + progress.reported, "epoch": progress.reported})
        dead = sorted(s for s, r in progress.results.items() if r.did_not_learn)
        if dead:
            trial.set_user_attr(DEAD_TAG, dead)
            raise optuna.TrialPruned(f"seed {', '.join(map(str, dead))} did not learn")
        raise optuna.TrialPruned(f"pruned at epoch {progress.reported} of launch {progress.group}")


def line(trial: optuna.Trial, results: dict[int, SeedResult]) -> str:
    """What the trial gave, in one line for the console."""
    outcome = trial.user_attrs.get(OUTCOME, "interrupted")
    if outcome == "pruned":
        outcome += f" at epoch {trial.user_attrs['pruned_at']['epoch']}"
    settings = " ".join(overrides(trial.user_attrs.get(OVERRIDES, {})))
    seeds = ", ".join(
        f"{s}: {r.best_val_accuracy:.4f}{' (did not learn)' if r.did_not_learn else ''}" for s, r in results.items()
    )
    mean = f"; mean {statistics.fmean(r.best_val_accuracy for r in results.values()):.4f}" if results else ""
    took = f"; {trial.user_attrs['seconds'] / 60:.1f} min" if "seconds" in trial.user_attrs else ""
    return f"trial {trial.number} {outcome}: {settings}; seeds {seeds or '-'}{mean}{took}"
