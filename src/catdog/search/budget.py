"""A search's trials as a budget: which trials count, which are rerun, and when a worker stops.

Every trial the search finishes (complete, pruned, did not learn, failed) carries an `outcome` and counts. A trial
cut short by a kill has none: it is failed (at once with a journal, which one search process holds at a time; by
another worker's heartbeat check with a shared database, once) and its settings are enqueued again, once; the rerun
trains only the seeds the cut-short trial had not finished (catdog.search.objective). Finished trials never run
again. The budget is exact with any number of workers: a trial starts only if fewer than `n_trials` trials before it
(by number, which the storage hands out in order) take a slot; one that finds the budget spent ends at once as
`surplus`, never counted nor rerun, and stops its worker.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

OUTCOME = "outcome"  # set on every trial the search finished
OVERRIDES = "overrides"  # the config values the trial trained with
RETRY_OF = "retry_of"  # set on a trial that reruns an interrupted one's settings
SURPLUS = "surplus"  # set on a trial started after the budget was spent (by another worker)


def counted(study: optuna.Study) -> list[FrozenTrial]:
    """The trials the search finished, each counting against its budget."""
    return [t for t in study.get_trials(deepcopy=False) if OUTCOME in t.user_attrs]


def interrupted(trial: FrozenTrial) -> bool:
    """A trial a kill cut short: failed without the search having finished it."""
    return trial.state == TrialState.FAIL and OUTCOME not in trial.user_attrs and SURPLUS not in trial.user_attrs


def takes_a_slot(trial: FrozenTrial) -> bool:
    """Finished, running or waiting to run: not a cut-short trial (its rerun takes its slot), not a surplus one."""
    if SURPLUS in trial.user_attrs:
        return False
    return OUTCOME in trial.user_attrs or trial.state in (
        TrialState.RUNNING,
        TrialState.WAITING,
        TrialState.COMPLETE,
        TrialState.PRUNED,
    )


def retry(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Enqueue an interrupted trial's settings again, unless a trial already reruns them; whether it did."""
    if any(t.user_attrs.get(RETRY_OF) == trial.number for t in study.get_trials(deepcopy=False)):
        return False
    study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number})
    return True


def recover(study: optuna.Study, one_process: bool) -> list[int]:
    """After a kill: fail the trials left running (only where one process runs the search: a shared database's
    heartbeat finds its workers' stale trials) and enqueue each interrupted trial's settings again; return the
    numbers of the trials enqueued again now."""
    again = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.RUNNING and one_process:
            study.tell(trial.number, state=TrialState.FAIL)
        elif not interrupted(trial):
            continue
        if retry(study, trial):
            again.append(trial.number)
    return again


class Budget:
    """Stops the search once `n_trials` trials took their slots, counting those of earlier runs and other workers."""

    def __init__(self, n_trials: int) -> None:
        self.n_trials = n_trials

    def left(self, study: optuna.Study) -> int:
        """Trials still to run: the slots nobody took yet, and the reruns waiting for theirs."""
        trials = study.get_trials(deepcopy=False)
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        return max(0, self.n_trials - sum(takes_a_slot(t) for t in trials)) + waiting

    def admits(self, study: optuna.Study, number: int) -> bool:
        """Whether trial `number` is within the budget: fewer than `n_trials` trials before it take a slot."""
        before = [t for t in study.get_trials(deepcopy=False) if t.number < number]
        return sum(takes_a_slot(t) for t in before) < self.n_trials

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if SURPLUS in trial.user_attrs or self.left(study) == 0:
            study.stop()
