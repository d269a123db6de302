"""Real searches on the tiny data (Optuna, MLflow, `src/train.py --multirun` through the launchers): a trial pruned
between two epochs, a search whose journal continues in another clone (tracked in MLflow, its best trial applied),
workers sharing a database, a stopped search, and every seed of a trial trained on the study's thread count."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import REPO, TINY_SIZE
from mlflow import MlflowClient
from omegaconf import OmegaConf
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState
from test_search import child_run, search_config

from catdog.search.budget import counted
from catdog.search.run import training_args

SEARCH = [sys.executable, str(REPO / "src" / "search.py"), "hparams_search=baseline", "search.poll_s=0.3"]
SIZE = f"trainer.image_size={TINY_SIZE}"
TWO_SEEDS = ["search.seeds=[42,1]", "search.min_seeds=2"]
ONE_SEED = ["search.seeds=[42]", "search.min_seeds=1"]  # where no check is about a trial's seeds
TINY = [SIZE, *TWO_SEEDS]


def journal(root: Path) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(root / "searches" / "baseline" / "journal.log")))
    return optuna.load_study(study_name="baseline", storage=storage)


def processes_running(text: str) -> list[str]:
    """Command lines of this machine's processes that contain `text`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and str(os.getpid()) != proc.name:
            found.append(cmdline)
    return found


def test_every_seed_trains_on_the_thread_count_dvc_repro_uses_here(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = search_config()
    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    monkeypatch.delenv("CATDOG_THREADS", raising=False)
    assert "trainer.threads=6" in training_args(cfg, [], joblib)  # not 6 // 2: every seed as the study trains
    monkeypatch.setenv("CATDOG_THREADS", "3")
    assert "trainer.threads=3" in training_args(cfg, [], joblib)
    pinned = training_args(cfg, ["trainer.threads=1"], joblib)
    assert [a for a in pinned if a.startswith("trainer.threads=")] == ["trainer.threads=1"]


@pytest.mark.slow
def test_a_pruned_trial_stops_its_training_between_two_epochs(split_data: Path) -> None:
    """The pruner says stop at epoch 2 of 40: the launch's process group is gone, the seeds' runs are KILLED, their
    checkpoints removed, and the trial records the epoch; both seeds trained (in parallel) on the same threads."""
    always = [
        "search.pruner._target_=optuna.pruners.ThresholdPruner",
        "~search.pruner.n_startup_trials",
        "~search.pruner.n_min_trials",
        "+search.pruner.lower=1.01",
        "search.pruner.n_warmup_steps=2",
    ]
    epochs = ["trainer.epochs=40", "trainer.early_stopping.enabled=false"]
    argv = [*SEARCH, *TINY, "search.n_trials=1", *always, *epochs, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    done = subprocess.run(argv, cwd=split_data, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (trial,) = journal(split_data).trials
    assert trial.state == TrialState.PRUNED and trial.user_attrs["outcome"] == "pruned"
    assert trial.user_attrs["pruned_at"] == {"step": 2, "epoch": 2} and max(trial.intermediate_values) == 2
    assert "trial 0 pruned at epoch 2: " in done.stdout
    assert not processes_running(str(split_data / "searches"))  # the training processes are gone
    assert not list((split_data / "checkpoints").rglob("state.json"))
    client = MlflowClient()
    experiment = client.get_experiment_by_name("catdog-search").experiment_id
    trial_run = trial.user_attrs["mlflow_run_id"]
    seeds = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{trial_run}'")
    assert sorted(int(r.data.tags["seed"]) for r in seeds) == [1, 42]
    assert {r.info.status for r in seeds} == {"KILLED"}
    assert {r.data.tags["tf_threads"] for r in seeds} == {str(trial.user_attrs["machine"]["threads"])}
    assert client.get_run(trial_run).data.metrics["pruned_at_epoch"] == 2
    machine = trial.user_attrs["machine"]
    assert client.get_run(trial_run).data.tags["machine_id"] == machine["id"] and machine["cores"] >= 1


def wait_for(condition, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with_trials = condition()
        if with_trials:
            return
        time.sleep(0.3)
    raise AssertionError("timed out")


def trial_with_one_seed_done(root: Path) -> bool:
    """Trial 0 running with seed 42 finished (its result in the journal) and seed 1 training."""
    try:
        trials = journal(root).trials
    except (KeyError, FileNotFoundError, ValueError):
        return False
    return len(trials) == 1 and trials[0].state == TrialState.RUNNING and "seed_42" in trials[0].user_attrs


def check_tracked(study: optuna.Study) -> None:
    """The search's MLflow record: one parent run with the table, best trial and figures; a child run per counted
    trial with each seed's value (the journal's) and the objective, the seeds' training runs nested under it, once
    each (a seed carried from a cut trial moved under its rerun)."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name("catdog-search").experiment_id
    (parent,) = client.search_runs([experiment], "tags.search = 'baseline' and attributes.run_name = 'search baseline'")
    assert parent.info.status == "FINISHED" and parent.data.tags["optuna_storage"] == "searches/baseline/journal.log"
    assert {"trials.csv", "best.json", "search.yaml"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert {"figures/optimization_history.png", "figures/best_settings.png"} <= figures
    for trial in counted(study):
        run = child_run(trial)
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id and run.info.status == "FINISHED"
        per_seed = {s: run.data.metrics[f"best_val_accuracy_seed_{s}"] for s in (42, 1)}
        assert per_seed == {s: trial.user_attrs[f"seed_{s}"]["best_val_accuracy"] for s in (42, 1)}
        assert (
            trial.value == pytest.approx(run.data.metrics["objective"]) == pytest.approx(np.mean([*per_seed.values()]))
        )
        seeds = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
        assert sorted(int(r.data.tags["seed"]) for r in seeds) == [1, 42]  # each seed trained once


@pytest.mark.slow
def test_a_killed_search_continues_in_another_clone_tracked_once_and_applies_its_best_trial(
    split_data: Path, tmp_path: Path
) -> None:
    """Killed while its trial trains the second seed, the search continues in a copy of the project that holds only
    the committed files (its journal among them): the cut trial's rerun has its settings and seed 42's result from
    the journal and trains only seed 1, the cut trial's MLflow run ends KILLED and the search keeps its one parent
    run; then it applies its best trial. (A finished trial is counted, not rerun: the shared-database test below.)"""
    argv = [*SEARCH, *TINY, "search.n_trials=1", "search.seeds_at_once=1", "trainer.epochs=2"]
    first = subprocess.Popen(argv, cwd=split_data, start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: trial_with_one_seed_done(split_data))
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    clone = tmp_path / "clone"
    for folder in ("data", "searches/baseline"):
        shutil.copytree(split_data / folder, clone / folder, ignore=shutil.ignore_patterns("trial-*", ".*lock*"))
    before = journal(clone).trials
    resumed = subprocess.run(argv, cwd=clone, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    study = journal(clone)
    (rerun,) = (t for t in study.trials if t.user_attrs.get("retry_of") == 0)
    assert study.trials[0].state == TrialState.FAIL and rerun.state == TrialState.COMPLETE
    assert rerun.params == before[0].params and [t.number for t in counted(study)] == [rerun.number]
    assert rerun.user_attrs["seed_42"] == before[0].user_attrs["seed_42"]  # carried, not trained again
    trained = sorted(p.name for p in (clone / "searches" / "baseline" / f"trial-{rerun.number}").glob("seed-*"))
    assert trained == ["seed-1"]
    assert "trial 0 was cut short; its settings run again" in resumed.stdout
    assert child_run(study.trials[0]).info.status == "KILLED"
    assert child_run(study.trials[0]).data.tags["outcome"] == "interrupted"
    check_tracked(study)
    params = clone / "params.yaml"
    shutil.copyfile(REPO / "params.yaml", params)
    apply = [*SEARCH, "search.apply=true", f"search.params_file={params}"]
    applied = subprocess.run(apply, cwd=clone, capture_output=True, text=True, timeout=300)
    assert applied.returncode == 0, applied.stderr
    best = max(counted(study), key=lambda t: (t.value, -t.number))
    for key, value in best.user_attrs["overrides"].items():
        assert OmegaConf.select(OmegaConf.load(params), f"variants.baseline.{key}") == value


@pytest.fixture
def optuna_database() -> Iterator[str]:
    """A PostgreSQL cluster of its own on 127.0.0.1 with an `optuna` database; its URI (with the password)."""
    from catdog.team.postgres import Cluster

    folder = Path(tempfile.gettempdir()) / f"catdog-optuna-{secrets.token_hex(6)}"  # reachable by the postgres user
    folder.mkdir(mode=0o711)
    cluster = Cluster(folder / "postgres")
    try:
        cluster.start()
        cluster.create_database("optuna")
        yield cluster.uri("optuna")
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


def shared_study(url: str) -> optuna.Study:
    return optuna.load_study(study_name="baseline", storage=url)


def running_trial(url: str) -> bool:
    """A trial running with all its settings drawn (its training started)."""
    try:
        return any(t.state == TrialState.RUNNING and "overrides" in t.user_attrs for t in shared_study(url).trials)
    except KeyError:  # not created yet
        return False


@pytest.mark.slow
@pytest.mark.requires("postgres")
def test_workers_sharing_a_database_draw_apart_share_one_parent_rerun_a_stale_trial_once_and_keep_the_budget(
    split_data: Path, optuna_database: str
) -> None:
    """Worker A is killed in its first trial; B and C then start together on the same PostgreSQL study: the stale
    trial is failed by a heartbeat check and rerun once, the budget of 4 is exact, every trial drew its own settings
    (two workers seeded alike would draw the same ones: B and C each draw one after the rerun and the first new
    trial), and the search has one MLflow parent run."""
    env = {**os.environ, "OPTUNA_STORAGE": optuna_database}
    argv = [
        *SEARCH,
        SIZE,
        *ONE_SEED,
        "search.n_trials=4",
        "trainer.epochs=1",
        "search.heartbeat_s=1",
        "search.grace_s=3",
    ]
    first = subprocess.Popen(argv, cwd=split_data, env=env, start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: running_trial(optuna_database))
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    (stale,) = shared_study(optuna_database).trials
    workers = [subprocess.Popen(argv, cwd=split_data, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for worker in workers:
        assert worker.wait(timeout=900) == 0
    study = shared_study(optuna_database)
    assert study.trials[stale.number].state == TrialState.FAIL
    reruns = [t for t in study.trials if t.user_attrs.get("retry_of") == stale.number]
    assert len(reruns) == 1 and reruns[0].params == stale.params
    finished = counted(study)
    assert len(finished) == 4 and all(t.state == TrialState.COMPLETE for t in finished)
    drawn = [tuple(sorted(t.params.items())) for t in finished if t.number != reruns[0].number] + [
        tuple(sorted(stale.params.items()))
    ]
    assert len(set(drawn)) == len(drawn)  # four trials, four settings
    others = [t for t in study.trials if t not in finished and t.number != stale.number]
    assert all(t.user_attrs.get("surplus") for t in others)  # a worker that found the budget spent started nothing
    client = MlflowClient()
    experiment = client.get_experiment_by_name("catdog-search").experiment_id
    parents = client.search_runs([experiment], "attributes.run_name = 'search baseline'")
    assert len(parents) == 1 and parents[0].data.tags["optuna_storage"].startswith("postgresql+psycopg://postgres:***@")


def descendants(pid: int) -> set[int]:
    """The processes below `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(proc.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of `pids` still running (a zombie has exited)."""
    running = set()
    for pid in pids:
        try:
            state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.add(pid)
    return running


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stop", "launch", "seeds", "processes"),
    [
        (signal.SIGTERM, ONE_SEED, 1, 1),  # the training command
        (signal.SIGKILL, [*TWO_SEEDS, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], 2, 3),  # and two workers
    ],
    ids=["SIGTERM", "SIGKILL"],
)
def test_a_stopped_search_leaves_no_training_behind(
    split_data: Path, stop: signal.Signals, launch: list[str], seeds: int, processes: int
) -> None:
    """Stopped while its training runs, the search takes it along: SIGTERM as Ctrl-C would (the search stops its
    launch's process group, and its MLflow runs close KILLED); SIGKILL, while two seeds train in parallel (joblib),
    through each process's parent-death signal, the training command and both workers. (One seed with SIGTERM: the
    process group the search stops holds whatever the launcher started, as the pruned trial above shows.)"""
    argv = [*SEARCH, SIZE, "search.n_trials=1", "trainer.epochs=60", "trainer.early_stopping.enabled=false", *launch]
    search = subprocess.Popen(argv, cwd=split_data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    states = split_data / "checkpoints"
    try:
        wait_for(lambda: len(list(states.rglob("state.json"))) == seeds)  # each seed trained an epoch
        below = descendants(search.pid)
        assert len(below) >= processes
        search.send_signal(stop)
        search.wait(timeout=120)
        wait_for(lambda: not alive(below), timeout_s=60)
    finally:
        if search.poll() is None:
            search.kill()
    if stop == signal.SIGTERM:
        client = MlflowClient()
        experiment = client.get_experiment_by_name("catdog-search").experiment_id
        (parent,) = client.search_runs([experiment], "attributes.run_name = 'search baseline'")
        assert parent.info.status == "KILLED"
        assert "trial 0 interrupted: " in search.stdout.read()
