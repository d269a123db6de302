"""Where a search's Optuna study lives: by default Optuna's journal file `searches/<name>/journal.log` in the
repository (a plain text file, committed as the search goes, so that a search stopped on one machine continues on
another after `git pull`); a team's database (PostgreSQL) when $OPTUNA_STORAGE names one, shared by several search
workers. A study of the same name in the former default, `optuna.db`, is carried over into a new journal.

One search process runs a journal at a time (a lock file beside it, held for the whole search), so a trial still
running in it when a search starts was cut short; workers sharing a database set up one at a time (an advisory
lock), and a trial whose worker stopped is found by its silent heartbeat.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Iterator
from pathlib import Path

import optuna
import sqlalchemy
from hydra.utils import instantiate
from omegaconf import DictConfig
from optuna.storages.journal import JournalFileBackend, JournalStorage
from sqlalchemy.engine import make_url

from catdog.search.settings import SearchError
from catdog.settings.project import project_root

JOURNAL = "journal.log"
LOCK = ".search.lock"  # beside the journal; Optuna's own lock is journal.log.lock
FORMER_DEFAULT = "optuna.db"  # the SQLite file searches used before the journal
SEARCHES_DIR = "searches"


def storage_url(search: DictConfig) -> str:
    """search.storage ($OPTUNA_STORAGE), else the search's journal file in the repository (absolute)."""
    return search.storage or str(project_root() / SEARCHES_DIR / search.name / JOURNAL)


def is_journal(url: str) -> bool:
    return "://" not in url


def shown(url: str) -> str:
    """The storage without its password, to print and to tag (a journal as its path in the repository)."""
    if is_journal(url):
        path = Path(url)
        return str(path.relative_to(project_root())) if path.is_relative_to(project_root()) else url
    return make_url(url).render_as_string(hide_password=True)


def make_storage(search: DictConfig, url: str) -> optuna.storages.BaseStorage:
    """The study's storage: the journal file, or a database with a heartbeat, so that a worker's killed trial is
    failed and rerun by another worker (catdog.search.budget.retry)."""
    from catdog.search.budget import retry

    if is_journal(url):
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url))
    if url.startswith("sqlite:"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.storages.RDBStorage(
        url,
        heartbeat_interval=search.heartbeat_s,
        grace_period=search.grace_s,
        heartbeat_stale_trial_callback=retry,
    )


def shared(url: str) -> bool:
    """Whether several processes may run trials of one study at once (a server's database)."""
    return not (is_journal(url) or url.startswith("sqlite:"))


@contextlib.contextmanager
def one_process(url: str, name: str) -> Iterator[None]:
    """Hold a journal's or SQLite file's lock (`.search.lock` beside a journal) for the whole search: a second
    search process on it is refused. A shared database takes several workers: nothing to hold."""
    if shared(url):
        yield
        return
    path = Path(url) if is_journal(url) else Path(make_url(url).database or FORMER_DEFAULT)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(LOCK) if is_journal(url) else path.with_name(f"{path.name}.{name}.lock")
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SearchError(
                f"search {name!r} is already running on this machine ({lock.name} is held); wait for it, or stop "
                "it; for several workers on one search, share a database ($OPTUNA_STORAGE, docs/guide.md)"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def setting_up(url: str, name: str) -> Iterator[None]:
    """With a shared database, one worker at a time opens the search (its parent run, the reruns of what a kill
    cut short): PostgreSQL's advisory lock on the search's name. Elsewhere `one_process` already holds it."""
    if not shared(url):
        yield
        return
    with _advisory_lock(url, name):
        yield


@contextlib.contextmanager
def _advisory_lock(url: str, name: str) -> Iterator[None]:
    """PostgreSQL's session advisory lock on a number derived from the search's name."""
    key = int.from_bytes(hashlib.sha256(f"catdog-search:{name}".encode()).digest()[:8], "big", signed=True)
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        engine.dispose()


def carry_over(search: DictConfig, url: str, storage: optuna.storages.BaseStorage) -> str | None:
    """Copy the search's study from the former default `optuna.db` into a journal that has none yet; the file it
    came from, or None."""
    former = project_root() / FORMER_DEFAULT
    if not is_journal(url) or not former.is_file():
        return None
    if search.name in {s.study_name for s in storage.get_all_studies()}:
        return None
    source = f"sqlite:///{former}"
    if search.name not in optuna.get_all_study_names(source):
        return None
    optuna.copy_study(from_study_name=search.name, from_storage=source, to_storage=storage)
    return str(former)


def open_study(search: DictConfig, storage: optuna.storages.BaseStorage, url: str) -> optuna.Study:
    """The search's study, created or resumed, with its sampler and pruner (neither is stored: both are given
    again). One worker's seeded sampler is reseeded by the trials already there, so a resumed search does not draw
    its first settings again; workers sharing a database draw unseeded, each its own settings (TPE's constant
    liar counts the others' running trials as bad ones)."""
    study = optuna.create_study(storage=storage, study_name=search.name, direction="maximize", load_if_exists=True)
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise SearchError(f"study {search.name!r} in the storage minimises; choose another search.name")
    sampler = search.sampler
    if shared(url):
        seed = {"seed": None}
    elif sampler.get("seed") is not None:
        seed = {"seed": sampler.seed + len(study.trials)}
    else:
        seed = {}
    study.sampler = instantiate(sampler, **seed)
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
