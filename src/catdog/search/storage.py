"""The Optuna study a search lives in: SQLite beside the repository by default (`optuna.db`), a team's PostgreSQL
when $OPTUNA_STORAGE names one; its budget, and how a killed search resumes.

Every trial the search finishes (complete, pruned, did not learn, failed) carries an `outcome` and counts against
the budget. A trial cut short by a kill has none: it is failed (at once with the local store, which one search
process holds at a time; after its heartbeat's grace period with a shared one) and enqueued again with the same
settings, whose seeds' runs then resume from their checkpoints. Finished trials are never run again.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from catdog.search.settings import SearchError
from catdog.settings.project import project_root

SQLITE_FILE = "optuna.db"
OUTCOME = "outcome"  # set on every trial the search finished
OVERRIDES = "overrides"  # the config values the trial trained with
RETRY_OF = "retry_of"  # set on a trial that reruns an interrupted one's settings
SQLITE_TIMEOUT_S = 60


def storage_url(search: DictConfig) -> str:
    """search.storage ($OPTUNA_STORAGE), else an SQLite file at the repository root (absolute)."""
    return search.storage or f"sqlite:///{project_root() / SQLITE_FILE}"


def shown(url: str) -> str:
    """The URL without its password, to print and to tag."""
    return make_url(url).render_as_string(hide_password=True)


def is_local(url: str) -> bool:
    return url.startswith("sqlite:")


def make_storage(search: DictConfig, url: str) -> optuna.storages.RDBStorage:
    """The study's storage; a shared one with a heartbeat, so that a worker's killed trial is failed and retried."""
    if is_local(url):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}})
    return optuna.storages.RDBStorage(
        url,
        heartbeat_interval=search.heartbeat_s,
        grace_period=search.grace_s,
        heartbeat_stale_trial_callback=retry,
    )


@contextlib.contextmanager
def exclusive(url: str, name: str) -> Iterator[None]:
    """With the local store, hold `<db>.<name>.lock` while the search runs: one process per search on a machine,
    so that a trial still running when the search starts was cut short by a kill."""
    if not is_local(url):
        yield
        return
    database = Path(make_url(url).database or SQLITE_FILE)
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(f"{database.name}.{name}.lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SearchError(
                f"search {name!r} is already running on this machine ({lock.name} is held); wait for it, or stop it"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def open_study(search: DictConfig, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """The search's study, created or resumed, with its sampler and pruner. A seeded sampler is reseeded by the
    trials already there, so a resumed search does not draw its first settings again."""
    study = optuna.create_study(storage=storage, study_name=search.name, direction="maximize", load_if_exists=True)
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise SearchError(f"study {search.name!r} in the storage minimises; choose another search.name")
    sampler = search.sampler
    offset = {"seed": sampler.seed + len(study.trials)} if sampler.get("seed") is not None else {}
    study.sampler = instantiate(sampler, **offset)
    study.pruner = instantiate(search.pruner)
    return study


def same_as_before(study: optuna.Study, attrs: dict) -> None:
    """Record what the search's objective means (variant, seeds); a resumed search must mean the same."""
    for key, value in attrs.items():
        before = study.user_attrs.get(key)
        if before is not None and before != value:
            raise SearchError(
                f"search {study.study_name!r} was run with {key} {before}, now {value}: its trials would not be "
                "comparable; keep them, or start another search (search.name=...)"
            )
        study.set_user_attr(key, value)


def counted(study: optuna.Study) -> list[FrozenTrial]:
    """The trials the search finished, each counting against its budget."""
    return [t for t in study.get_trials(deepcopy=False) if OUTCOME in t.user_attrs]


def retry(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Enqueue an interrupted trial's settings again, unless a trial already reruns them; whether it did."""
    if any(t.user_attrs.get(RETRY_OF) == trial.number for t in study.get_trials(deepcopy=False)):
        return False
    study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number})
    return True


def recover(study: optuna.Study, url: str) -> list[int]:
    """After a kill: fail the trials left running (local store only; a shared one's heartbeat does it) and enqueue
    each interrupted trial's settings again; return the numbers of the trials enqueued again now."""
    again = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.RUNNING and is_local(url):
            study.tell(trial.number, state=TrialState.FAIL)
        elif trial.state != TrialState.FAIL or OUTCOME in trial.user_attrs:
            continue
        if retry(study, trial):
            again.append(trial.number)
    return again


class Budget:
    """Stops the search once it finished `n_trials` trials, counting those of earlier runs and other workers."""

    def __init__(self, n_trials: int) -> None:
        self.n_trials = n_trials

    def left(self, study: optuna.Study) -> int:
        return max(0, self.n_trials - len(counted(study)))

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.left(study) == 0:
            study.stop()
