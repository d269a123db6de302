"""One trial: draw its settings, check the config they compose to, train the seeds a few at a time through the
launcher, and score the mean best val accuracy over the seeds (never test).

After each launch but the last, the mean so far is reported to the pruner, which may stop an unpromising trial
before its remaining seeds. A seed that did not learn ends the trial at once, as pruned (outcome `did_not_learn`):
it counts as a failed trial, and the sampler still learns that its settings scored low. A training command that
fails (a diverged run) fails the trial; the search goes on.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from omegaconf import DictConfig

from catdog.search.launch import SeedResult, TrialFailed, launch
from catdog.search.space import digest, overrides, suggest
from catdog.search.storage import OUTCOME, OVERRIDES
from catdog.search.tracking import RUN_ATTR, Tracker
from catdog.train.dead_runs import TAG as DEAD_TAG


def groups(seeds: list[int], at_once: int) -> list[list[int]]:
    """The seeds in launch order, `at_once` per launch."""
    return [seeds[i : i + at_once] for i in range(0, len(seeds), at_once)]


@dataclass
class Objective:
    """Optuna's objective for one search: `search` (its settings), `train_args` (the variant, inherited overrides
    and launcher of every trial's training command), `folder` (trial-<n>/ folders go there), `compose` (the
    config a trial's overrides give, checked: a setting out of range stops the search), `tracker` (MLflow)."""

    search: DictConfig
    train_args: list[str]
    folder: Path
    compose: Callable[[list[str]], None]
    tracker: Tracker

    def __call__(self, trial: optuna.Trial) -> float:
        values = suggest(trial, self.search.space)
        trial.set_user_attr(OVERRIDES, values)
        try:
            self.compose(overrides(values))
        except Exception as exc:
            trial.set_user_attr(OUTCOME, "failed")  # counted, not retried: the space itself is wrong
            trial.set_user_attr("failure", str(exc))
            raise
        run_id = self.tracker.start_trial(trial.number, values)
        trial.set_user_attr(RUN_ATTR, run_id)
        name = f"{self.search.name}-{digest(self.search.variant, values, self.train_args)}"
        results: dict[int, SeedResult] = {}
        try:
            return self._seeds(trial, [*self.train_args, *overrides(values), f"name={name}"], results)
        finally:
            self.tracker.end_trial(run_id, trial, results)
            print(line(trial, results), flush=True)

    def _seeds(self, trial: optuna.Trial, args: list[str], results: dict[int, SeedResult]) -> float:
        """Train the seeds launch by launch into `results`; the mean best val accuracy, or pruned, or failed."""
        seeds = list(self.search.seeds)
        for group in groups(seeds, self.search.seeds_at_once):
            try:
                results.update(launch(args, group, self.folder / f"trial-{trial.number}"))
            except TrialFailed as exc:
                trial.set_user_attr(OUTCOME, "failed")
                trial.set_user_attr("failure", str(exc))
                raise
            for seed in group:
                trial.set_user_attr(f"val_accuracy_seed_{seed}", results[seed].best_val_accuracy)
            mean = statistics.fmean(r.best_val_accuracy for r in results.values())
            dead = sorted(s for s, r in results.items() if r.did_not_learn)
            if dead:
                trial.set_user_attr(DEAD_TAG, dead)
                trial.report(mean, len(results))
                trial.set_user_attr(OUTCOME, DEAD_TAG)
                raise optuna.TrialPruned(f"seed {', '.join(map(str, dead))} did not learn")
            if len(results) < len(seeds):
                trial.report(mean, len(results))
                if trial.should_prune():
                    trial.set_user_attr(OUTCOME, "pruned")
                    raise optuna.TrialPruned(f"mean {mean:.4f} after {len(results)} seeds")
        trial.set_user_attr(OUTCOME, "complete")
        return statistics.fmean(r.best_val_accuracy for r in results.values())


def line(trial: optuna.Trial, results: dict[int, SeedResult]) -> str:
    """What the trial gave, in one line for the console."""
    outcome = trial.user_attrs.get(OUTCOME, "interrupted")
    settings = " ".join(overrides(trial.user_attrs.get(OVERRIDES, {})))
    seeds = ", ".join(
        f"{s}: {r.best_val_accuracy:.4f}{' (did not learn)' if r.did_not_learn else ''}" for s, r in results.items()
    )
    mean = f"; mean {statistics.fmean(r.best_val_accuracy for r in results.values()):.4f}" if results else ""
    return f"trial {trial.number} {outcome}: {settings}; seeds {seeds or '-'}{mean}"
