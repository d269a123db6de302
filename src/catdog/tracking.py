"""MLflow glue: where the store is, making sure it answers, what ties a run to its code and data, and what a run logs."""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import time
import warnings
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from catdog.checkpoints import History, State
from catdog.config import DVC_EXPERIMENT_ENV, URI_ENV, StoreError
from catdog.files import sha256_file

log = logging.getLogger(__name__)

ARTIFACTS_DIR = "mlartifacts"
REMOTE_SCHEMES = ("http://", "https://")
# A read every client may make: what the server answers it shows whether this client's credentials get in.
CREDENTIALS_PROBE = "/api/2.0/mlflow/experiments/search"
PARAM_VALUE_LIMIT = 6000
SENTINEL_METRIC = "loss"
# Runs made by `dvc exp run` carry the experiment's name (from DVC_EXPERIMENT_ENV) in this tag.
DVC_EXPERIMENT_TAG = "dvc_experiment"
# What decides the study's results: a change to any of these since the commit makes the work tree dirty (the
# pipeline's own outputs, which `dvc repro` rewrites as it goes, do not count).
STUDY_INPUTS = ("src", "conf", "params.yaml", "dvc.yaml")


class TrackingUnavailable(StoreError):
    """The tracking store named by the config or the environment does not answer."""


class TrackingServerError(TrackingUnavailable):
    """The tracking server answered its health check, or this client's first API call, with an HTTP error."""


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
    """Fail fast, naming the URI, when a tracking server is not there, answers with an HTTP error, or refuses this
    client's credentials (MLflow's own MLFLOW_TRACKING_USERNAME / _PASSWORD / _TOKEN): before anything is logged."""
    if not uri.startswith(REMOTE_SCHEMES):
        return
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout_s):
            pass
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
    check_credentials(uri, timeout_s)


def check_credentials(uri: str, timeout_s: float) -> None:
    """`/health` answers anyone; a server with authentication (`mlflow server --app-name basic-auth`) answers an
    API call without valid credentials with 401, and one the user may not make with 403."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        response = http_request(
            get_default_host_creds(uri), CREDENTIALS_PROBE, "GET", max_retries=0, timeout=timeout_s,
            params={"max_results": 1},
        )
    except mlflow.MlflowException as exc:
        raise TrackingUnavailable(f"MLflow tracking server {uri} did not answer {CREDENTIALS_PROBE}: {exc}") from exc
    if response.status_code in (401, 403):
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        who = f"user {user!r}" if user else "no credentials"
        raise TrackingServerError(
            f"MLflow tracking server {uri} answered {CREDENTIALS_PROBE} with HTTP {response.status_code} "
            f"{response.reason} ({who}): {http_error_hint(response.status_code)}"
        )


def lost(uri: str, timeout_s: float) -> bool:
    """Whether a tracking server that answered when the run started no longer does."""
    try:
        check_reachable(uri, timeout_s)
    except TrackingUnavailable:
        return True
    return False


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
    """The commit the code came from, whether the study's inputs (code, config, params, pipeline) differed from
    it, and the DVC experiment it ran in."""
    experiment = os.environ.get(DVC_EXPERIMENT_ENV)
    tags = {DVC_EXPERIMENT_TAG: experiment} if experiment else {}
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": "unknown", "git_dirty": "unknown", **tags}
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", *STUDY_INPUTS)
    return {"git_commit": commit, "mlflow.source.git.commit": commit, "git_dirty": str(bool(dirty)).lower(), **tags}


def start_tracking(cfg: DictConfig, state: State | None, experiment_id: str, version: str) -> mlflow.ActiveRun:
    """Continue the interrupted run, or open a new one with params (the config, and `data.version`: the split's
    manifests' hash), tags, config files and the train and val splits as dataset inputs."""
    if state is not None:
        log.info("resuming run %s from epoch %d", state.run_id, state.epochs_done)
        return mlflow.start_run(run_id=state.run_id)
    run = mlflow.start_run(experiment_id=experiment_id, run_name=cfg.name)
    mlflow.log_params({**flat_params(cfg), "data.version": version})
    mlflow.set_tags({"variant": cfg.name, "data_version": version, **source_tags()})
    mlflow.log_dict(OmegaConf.to_container(cfg, resolve=True), "config/resolved.yaml")
    log_split_inputs(Path(cfg.data.split_dir), {"train": "training", "val": "validation"})
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


def log_split_inputs(split_dir: Path, contexts: dict[str, str]) -> None:
    """Log each split's manifest as a dataset input of the active run: its name, its file's hash as the digest,
    the manifest's path as the source, and `contexts[name]` (training, validation, test) as the context."""
    for name, context in contexts.items():
        manifest = (split_dir / f"{name}.csv").resolve()
        with warnings.catch_warnings():  # mlflow registers its local-file source twice and warns it is ambiguous
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(
                pd.read_csv(manifest), source=str(manifest), name=name, digest=sha256_file(manifest)[:16]
            )
        mlflow.log_input(dataset, context=context)
