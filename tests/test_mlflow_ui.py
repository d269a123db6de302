"""The page a training run prints opens MLflow's UI on the model-training view (MLflow 3 opens the GenAI one
otherwise), checked in headless Chromium against a real `mlflow server`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from headless import find_browser, page_text
from mlflow import MlflowClient

from catdog.team.loopback import free_port, wait_http

RUN = "baseline-42"
NOTE = "baseline: best val accuracy 70.0% at epoch 2 of 2"


@pytest.mark.slow
@pytest.mark.requires("chromium")
def test_the_printed_run_page_opens_the_model_training_view(tmp_path: Path) -> None:
    from catdog.train.run_log import NOTE_TAG, where_to_look

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(store)
    experiment = client.create_experiment("catdog-study", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment, run_name=RUN)
    client.set_tag(run.info.run_id, NOTE_TAG, NOTE)
    client.set_terminated(run.info.run_id)
    port, log = free_port(), tmp_path / "server.log"
    command = ["-m", "mlflow", "server", "--backend-store-uri", store, "--host", "127.0.0.1", "--port", str(port)]
    # Without MLflow's GenAI job runner and its seven Huey consumers (catdog/team/server.py says why): a page of a
    # training run needs none of them, and they cost the suite about 12 s of CPU.
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, *command, "--workers", "1"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", server, log, "mlflow server", 240)
        page = where_to_look(f"http://127.0.0.1:{port}", experiment, run.info.run_id)
        training = page_text(page, find_browser(), until=NOTE)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    # The model-training view's side bar: runs, models, traces and the registry; the GenAI view MLflow opens without
    # the query has judges and prompts instead (checked in Chromium when the query was added).
    assert NOTE in training and "Model registry" in training and "Judges" not in training, training
