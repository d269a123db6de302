"""A search in MLflow: one parent run per search (resumed with it), one child run per trial with its settings,
each seed's best val accuracy, the objective and its outcome, and the trial's training runs nested under it; the
parent holds the trials table, the best trial and the figures, rewritten after every trial."""

from __future__ import annotations

import json
import statistics

import matplotlib.pyplot as plt
import optuna
from mlflow import MlflowClient
from mlflow.entities import Param
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from catdog.common.machine import words
from catdog.search.budget import OUTCOME, OVERRIDES, counted
from catdog.search.figures import figures
from catdog.search.launch import SeedResult
from catdog.train.dead_runs import TAG as DEAD_TAG

RUN_ATTR = "mlflow_run_id"  # the study's parent run, and each trial's own run
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag
PARAM_LIMIT = 6000
STATUS = {"complete": "FINISHED", "pruned": "FINISHED", DEAD_TAG: "FINISHED", "failed": "FAILED", None: "KILLED"}


class Tracker:
    """The MLflow side of one search."""

    def __init__(self, experiment_id: str, parent_id: str, name: str) -> None:
        self.client = MlflowClient()
        self.experiment_id, self.parent_id, self.name = experiment_id, parent_id, name

    @classmethod
    def open(cls, study: optuna.Study, search: DictConfig, experiment_id: str, tags: dict[str, str]) -> Tracker:
        """The search's parent run: the one an earlier run of the search opened, set running again, or a new one
        with the search's settings as params and `tags`."""
        client, parent = MlflowClient(), study.user_attrs.get(RUN_ATTR)
        try:
            known = parent is not None and client.get_run(parent).info.experiment_id == experiment_id
        except MlflowException:  # another tracking store than the search's earlier runs used
            known = False
        if known:
            client.update_run(parent, status="RUNNING")
        else:
            parent = client.create_run(experiment_id, run_name=f"search {search.name}", tags=tags).info.run_id
            params = [Param(k, _text(v)[:PARAM_LIMIT]) for k, v in settings(search).items()]
            client.log_batch(parent, params=params)
            study.set_user_attr(RUN_ATTR, parent)
        client.log_dict(parent, settings(search), "search.yaml")
        return cls(experiment_id, parent, search.name)

    def start_trial(self, number: int, values: dict, machine: dict) -> str:
        """A child run for trial `number`, with its settings as params and the machine it runs on as tags."""
        tags = {PARENT_TAG: self.parent_id, "search": self.name, "search_trial": str(number)}
        tags |= {"machine": words(machine), "machine_id": machine["id"]}
        run = self.client.create_run(self.experiment_id, run_name=f"{self.name} trial {number}", tags=tags)
        run_id = run.info.run_id
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in values.items()])
        return run_id

    def end_trial(
        self, run_id: str, trial: optuna.Trial, results: dict[int, SeedResult], killed: dict[int, str]
    ) -> None:
        """Each seed's value, the objective (a complete trial's), the outcome (none: interrupted), the training
        runs nested under the trial's run (those a pruned trial stopped ended KILLED); then the run's end status."""
        outcome = trial.user_attrs.get(OUTCOME)
        nested = {PARENT_TAG: run_id, "search": self.name, "search_trial": str(trial.number)}
        for seed, result in results.items():
            self.client.log_metric(run_id, f"best_val_accuracy_seed_{seed}", result.best_val_accuracy)
            if result.run_id:
                self._nest(result.run_id, nested)
        for seed_run in killed.values():
            self._nest(seed_run, nested)
            self.client.set_terminated(seed_run, "KILLED")
        if "pruned_at" in trial.user_attrs:
            self.client.log_metric(run_id, "pruned_at_epoch", trial.user_attrs["pruned_at"]["epoch"])
        if "seconds" in trial.user_attrs:
            self.client.log_metric(run_id, "seconds", trial.user_attrs["seconds"])
        if results:
            self.client.log_metric(run_id, "mean_best_val_accuracy", statistics.fmean(self._values(results)))
        if outcome == "complete":
            self.client.log_metric(run_id, "objective", statistics.fmean(self._values(results)))
        dead = sorted(s for s, r in results.items() if r.did_not_learn)
        self.client.set_tag(run_id, DEAD_TAG, str(bool(dead)).lower())
        self.client.set_tag(run_id, "outcome", outcome or "interrupted")
        if "failure" in trial.user_attrs:
            self.client.set_tag(run_id, "failure_reason", trial.user_attrs["failure"][:5000])
        self.client.set_terminated(run_id, STATUS.get(outcome, "FINISHED"))

    def _nest(self, seed_run: str, tags: dict[str, str]) -> None:
        """Put a seed's training run under the trial's run (it may live in another store: a trial rerun on
        another machine carries the seeds its first run finished)."""
        try:
            for key, value in tags.items():
                self.client.set_tag(seed_run, key, value)
        except MlflowException:
            pass

    @staticmethod
    def _values(results: dict[int, SeedResult]) -> list[float]:
        return [r.best_val_accuracy for r in results.values()]

    def cut_short(self, study: optuna.Study, numbers: list[int]) -> None:
        """Close the runs of trials a kill cut short (they were left running) as KILLED."""
        for trial in study.get_trials(deepcopy=False):
            if trial.number in numbers and RUN_ATTR in trial.user_attrs:
                self.client.set_tag(trial.user_attrs[RUN_ATTR], "outcome", "interrupted")
                self.client.set_terminated(trial.user_attrs[RUN_ATTR], "KILLED")

    def summary(self, study: optuna.Study) -> None:
        """The trials table, the best trial and the figures, on the parent run (rewritten each time)."""
        table = study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs", "duration"))
        self.client.log_text(self.parent_id, table.to_csv(index=False), "trials.csv")
        finished = counted(study)
        self.client.log_metric(self.parent_id, "trials_finished", len(finished), step=len(finished))
        complete = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
        if complete:
            best = max(complete, key=lambda t: (t.value, -t.number))
            self.client.log_metric(self.parent_id, "best_objective", best.value, step=len(finished))
            self.client.set_tag(self.parent_id, "best_trial", str(best.number))
            record = {"trial": best.number, "objective": best.value, "settings": best.user_attrs[OVERRIDES]}
            self.client.log_dict(self.parent_id, record | {"per_seed": _per_seed(best)}, "best.json")
        for name, figure in figures(study).items():
            self.client.log_figure(self.parent_id, figure, f"figures/{name}", save_kwargs={"bbox_inches": "tight"})
            plt.close(figure)

    def close(self, status: str) -> None:
        self.client.set_terminated(self.parent_id, status)


def settings(search: DictConfig) -> dict:
    """The search's settings to record: all but the storage URL, which may hold a password (the parent run's
    `optuna_storage` tag shows it without)."""
    return {k: v for k, v in OmegaConf.to_container(search, resolve=True).items() if k not in ("storage", "apply")}


def _text(value: object) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _per_seed(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    prefix = "seed_"
    return {k[len(prefix) :]: v["best_val_accuracy"] for k, v in trial.user_attrs.items() if k.startswith(prefix)}
