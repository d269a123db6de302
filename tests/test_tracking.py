"""Tracking: an absent server fails fast and by name; parallel runs share one SQLite store safely."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from catdog.tracking import TrackingUnavailable, flat_params, tracking_uri
from catdog.training import train
from conftest import REPO, expected_overrides, tiny_config

PARALLEL_RUNS = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_absent_tracking_server_fails_fast_naming_the_uri(split_data: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(TrackingUnavailable, match=f"{uri} did not answer"):
        train(tiny_config("baseline", f"tracking.uri={uri}"))
    assert time.monotonic() - started < 10
    assert not (split_data / "data" / "cache").exists(), "no data may be read before the tracker answers"


def test_environment_beats_config_and_default_is_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.invalid")
    assert tracking_uri("sqlite:///x.db") == "http://example.invalid"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    assert tracking_uri("") == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_params_are_the_flattened_resolved_config() -> None:
    params = flat_params(tiny_config("transfer"))
    assert params["model.net.weights"] == "None"
    assert params["trainer.checkpoint_dir"] == "checkpoints/transfer"
    assert params["augment.rotation"] == "[-0.3, 0.2]"


def test_parallel_runs_against_one_sqlite_store(split_data: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    procs = [
        subprocess.Popen(
            [sys.executable, str(REPO / "src" / "train.py"), "variant=baseline", f"name=parallel{i}",
             "trainer.image_size=32", "trainer.epochs=2", *expected_overrides()],
            cwd=split_data, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(PARALLEL_RUNS)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-3000:]
        assert "database is locked" not in out
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert sorted(r.info.run_name for r in runs) == [f"parallel{i}" for i in range(PARALLEL_RUNS)]
    assert all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [0, 1]
