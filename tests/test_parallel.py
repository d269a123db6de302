"""Runs in parallel: Hydra's joblib launcher on this machine, submitit on a real single-node Slurm, and the thread
pools each job's TensorFlow gets."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import slurm_cluster
from conftest import CONF, all_runs, run_entry, tiny_overrides
from mlflow import MlflowClient
from test_workers import cpus_pinned, outside_slurm

from catdog.settings.checks import ConfigError, validate
from catdog.settings.params import compose_config
from catdog.train.threads import THREADS_ENV, thread_count


@pytest.mark.parametrize("cpus", [1, 2])
def test_auto_threads_are_the_cores_this_process_may_use(monkeypatch: pytest.MonkeyPatch, cpus: int) -> None:
    outside_slurm(monkeypatch)
    with cpus_pinned(cpus):
        assert thread_count("auto") == cpus
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
        assert thread_count("auto") == 3  # inside a Slurm job: its allocation, not the node's cores
        assert thread_count(5) == 5


def test_the_machine_setting_reaches_the_config_and_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert compose_config(CONF, ["variant=baseline"]).trainer.threads == "auto"
    monkeypatch.setenv(THREADS_ENV, "1")
    assert compose_config(CONF, ["variant=baseline"]).trainer.threads == 1
    for bad in ("0", "two"):
        monkeypatch.setenv(THREADS_ENV, bad)
        with pytest.raises(ConfigError, match="trainer.threads: got .*; expected auto, or an integer >= 1"):
            validate(compose_config(CONF, ["variant=baseline"]))


ONE_EPOCH = "trainer.epochs=1"


def overlapping(intervals: list[tuple[int, int]]) -> bool:
    ordered = sorted(intervals)
    return any(later[0] < earlier[1] for earlier, later in zip(ordered, ordered[1:], strict=False))


@pytest.mark.slow
def test_a_joblib_sweep_trains_its_jobs_at_once_each_with_its_own_name_run_and_outputs(
    split_data: Path, isolated_mlflow: str
) -> None:
    """Two jobs at once, both writing to one SQLite store (racing for its one write lock): every epoch of each is
    logged once."""
    overrides = [o for o in tiny_overrides("baseline", outputs="adhoc") if o not in ("variant=baseline", ONE_EPOCH)]
    result = run_entry(
        "train.py",
        "--multirun",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "model=cnn",
        "optimizer.learning_rate=0.001,0.0003",
        "trainer.epochs=2",
        *overrides,
        cwd=split_data,
        env={**os.environ, "MLFLOW_TRACKING_URI": isolated_mlflow, "SLURM_CPUS_PER_TASK": "4"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "database is locked" not in result.stdout + result.stderr
    found = all_runs()
    for run in found:
        history = MlflowClient().get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [0, 1], run.info.run_name
    names = sorted(r.info.run_name for r in found)
    assert names == [f"cnn-augment_off-optimizer.learning_rate={lr}" for lr in ("0.0003", "0.001")], names
    assert {r.data.params["optimizer.learning_rate"] for r in found} == {"0.001", "0.0003"}
    assert all(r.info.status == "FINISHED" for r in found)
    # Inside a 4-core Slurm allocation two jobs at a time share its cores: each TensorFlow gets its half.
    assert {r.data.tags["tf_threads"] for r in found} == {"2"}
    assert overlapping([(r.info.start_time, r.info.end_time) for r in found]), "no two jobs ran at the same time"
    models = sorted((split_data / "multirun").rglob("model.keras"))
    assert len(models) == 2 and len({m.parent for m in models}) == 2
    assert not (split_data / "models").exists() and not (split_data / "metrics").exists(), "a job wrote the study's"
    for model in models:
        assert f"written to {model.parent.relative_to(split_data)}/" in result.stdout


@pytest.fixture
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A single-node Slurm cluster on this machine for the test (tests/slurm_cluster.py)."""
    with slurm_cluster.single_node_slurm(tmp_path_factory.mktemp("slurm")) as env:
        yield env


@pytest.mark.slow
@pytest.mark.requires("slurm")
def test_a_slurm_sweep_lands_its_runs_in_the_store(split_data: Path, isolated_mlflow: str, slurm) -> None:
    overrides = [o for o in tiny_overrides("baseline", outputs="adhoc") if not o.startswith("variant=")]
    result = run_entry(
        "train.py",
        "--multirun",
        "hydra/launcher=slurm",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=2",
        "hydra.launcher.timeout_min=10",
        "seed=3",  # one job: two at once, and their names, are the joblib sweep's test
        *overrides,
        cwd=split_data,
        env={**slurm, "MLFLOW_TRACKING_URI": isolated_mlflow},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run,) = all_runs()
    assert run.info.status == "FINISHED" and run.data.tags["seed"] == "3"
    assert run.data.tags["tf_threads"] == "1", "the job's TensorFlow did not take its allocation"
    # submitit kept the Slurm job's log: the job ran under Slurm (its folder is its Slurm job id).
    (log,) = (split_data / "multirun").rglob(".submitit/*/*_log.out")
    assert re.fullmatch(r"\d+(_\d+)?", log.parent.name) and log.stat().st_size > 0, log
