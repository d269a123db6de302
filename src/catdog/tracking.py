"""MLflow glue: where the store is, making sure it answers, what ties a run to its code and data, and what a run logs."""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
from hydra.core.hydra_config import HydraConfig
from mlflow.entities import Metric
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from catdog.checkpoints import History, State
from catdog.config import project_root

log = logging.getLogger(__name__)

URI_ENV = "MLFLOW_TRACKING_URI"
SQLITE_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
REMOTE_SCHEMES = ("http://", "https://")
PARAM_VALUE_LIMIT = 6000
SENTINEL_METRIC = "loss"
# `dvc exp run` names its experiment in this variable; runs made by one carry the name in this tag.
DVC_EXPERIMENT_ENV = "DVC_EXP_NAME"
DVC_EXPERIMENT_TAG = "dvc_experiment"


class TrackingUnavailable(RuntimeError):
    """The tracking store named by the config or the environment does not answer."""


def tracking_uri(configured: str) -> str:
    """$MLFLOW_TRACKING_URI, else the configured URI, else an SQLite file at the repository root (absolute)."""
    uri = os.environ.get(URI_ENV) or configured
    if uri:
        return uri
    return f"sqlite:///{project_root() / SQLITE_FILE}"


class TrackingServerError(TrackingUnavailable):
    """The tracking server answered its health check with an HTTP error status."""


def http_error_hint(status: int) -> str:
    """What an HTTP error status from a tracking server's health check most likely means, and what to do."""
    if status in (401, 403):
        return (
            "the server wants credentials: MLflow reads MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD "
            "or MLFLOW_TRACKING_TOKEN; set them, or check that they are right for this server"
        )
    if status == 404:
        return "this is not an MLflow tracking server at that path; check the URI's host, port and path"
    if status >= 500:
        return "the server failed with its own error; see the tracking server's log"
    return "the server refused the health check; check that the URI names an MLflow tracking server"


def check_reachable(uri: str, timeout_s: float) -> None:
    """Fail fast, naming the URI, when a tracking server is not there or answers with an HTTP error."""
    if not uri.startswith(REMOTE_SCHEMES):
        return
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout_s):
            return
    except urllib.error.HTTPError as exc:
        exc.close()
        raise TrackingServerError(
            f"MLflow tracking server {uri} answered {health} with HTTP {exc.code} {exc.reason}: "
            f"{http_error_hint(exc.code)}"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} did not answer within {timeout_s} s ({exc}); start it, "
            f"or unset {URI_ENV} / tracking.uri to use the local SQLite store"
        ) from exc


def _sqlite_path(uri: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(uri[len(prefix) :]) if uri.startswith(prefix) else None


def connect(uri: str, experiment: str, timeout_s: float) -> str:
    """Point MLflow at `uri` and select `experiment`; return its id.

    With a local SQLite store, artifacts go beside the database (not under whatever folder the first run started
    in, such as a DVC temporary experiment), and concurrent first uses of the file are serialised.
    """
    check_reachable(uri, timeout_s)
    mlflow.set_tracking_uri(uri)
    db = _sqlite_path(uri)
    if db is None:
        return mlflow.set_experiment(experiment).experiment_id
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = MlflowClient()
            found = client.get_experiment_by_name(experiment)
            if found is None:
                artifacts = (db.parent / ARTIFACTS_DIR / experiment).as_uri()
                return mlflow.set_experiment(experiment_id=client.create_experiment(experiment, artifacts)).experiment_id
            return mlflow.set_experiment(experiment_id=found.experiment_id).experiment_id
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def flat_params(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as `a.b.c` → value strings, as MLflow params."""
    flat: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = str(node)[:PARAM_VALUE_LIMIT]

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=Path.cwd())
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def source_tags() -> dict[str, str]:
    """The commit the code came from, whether the work tree differed from it, and the DVC experiment it ran in."""
    experiment = os.environ.get(DVC_EXPERIMENT_ENV)
    tags = {DVC_EXPERIMENT_TAG: experiment} if experiment else {}
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": "unknown", "git_dirty": "unknown", **tags}
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "mlflow.source.git.commit": commit, "git_dirty": str(bool(dirty)).lower(), **tags}


def start_tracking(cfg: DictConfig, state: State | None, experiment_id: str, version: str) -> mlflow.ActiveRun:
    """Continue the interrupted run, or open a new one with params (the config, and `data.version`: the split's
    manifests' hash), tags and config files."""
    if state is not None:
        log.info("resuming run %s from epoch %d", state.run_id, state.epochs_done)
        return mlflow.start_run(run_id=state.run_id)
    run = mlflow.start_run(experiment_id=experiment_id, run_name=cfg.name)
    mlflow.log_params({**flat_params(cfg), "data.version": version})
    mlflow.set_tags({"variant": cfg.name, "data_version": version, **source_tags()})
    mlflow.log_dict(OmegaConf.to_container(cfg, resolve=True), "config/resolved.yaml")
    if HydraConfig.initialized():
        mlflow.log_artifacts(str(Path(HydraConfig.get().runtime.output_dir) / ".hydra"), "config/hydra")
    return run


def log_pending_epochs(run_id: str, history: History) -> None:
    """Log to MLflow the epochs of `history` the run does not hold yet, all metrics of an epoch in one batch."""
    client = mlflow.MlflowClient()
    logged = len(client.get_metric_history(run_id, SENTINEL_METRIC))
    now = int(time.time() * 1000)
    for step in range(logged, len(history[SENTINEL_METRIC])):
        client.log_batch(run_id, metrics=[Metric(k, v[step], now, step) for k, v in history.items()])


def log_model(model: keras.Model, example: np.ndarray) -> None:
    """Log the model as an MLflow model with signature and input example.

    mlflow 3.17's log_model writes the input example before creating its folder (FileNotFoundError), so the
    model is saved into a folder made first, then logged as the run's `model` artifact.
    """
    signature = infer_signature(example, keras.ops.convert_to_numpy(model(example, training=False)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        path.mkdir()
        mlflow.keras.save_model(model, str(path), signature=signature, input_example=example)
        mlflow.log_artifacts(str(path), "model")
