"""MLflow glue: where the store is, making sure it answers, and what ties a run to its code and data."""

from __future__ import annotations

import fcntl
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from catdog.config import project_root
from catdog.files import sha256_files

URI_ENV = "MLFLOW_TRACKING_URI"
SQLITE_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
REMOTE_SCHEMES = ("http://", "https://")
PARAM_VALUE_LIMIT = 6000


class TrackingUnavailable(RuntimeError):
    """The tracking store named by the config or the environment does not answer."""


def tracking_uri(configured: str) -> str:
    """$MLFLOW_TRACKING_URI, else the configured URI, else an SQLite file at the repository root (absolute)."""
    uri = os.environ.get(URI_ENV) or configured
    if uri:
        return uri
    return f"sqlite:///{project_root() / SQLITE_FILE}"


def check_reachable(uri: str, timeout_s: float) -> None:
    """Fail fast, naming the URI, when a tracking server is not there."""
    if not uri.startswith(REMOTE_SCHEMES):
        return
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout_s):
            return
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


def git_tags() -> dict[str, str]:
    """The commit the code came from, and whether the work tree differed from it."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "mlflow.source.git.commit": commit, "git_dirty": str(bool(dirty)).lower()}


def data_version(split_dir: Path, splits: tuple[str, ...]) -> str:
    """A hash over the split manifests: the same manifests, the same data version."""
    return sha256_files([split_dir / f"{name}.csv" for name in splits])[:16]

