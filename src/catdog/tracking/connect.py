"""Reaching the tracking store: is the server there, do this client's credentials get in, did it go away during a
run; and selecting the study's experiment in it (a local SQLite store keeps its artifacts beside it)."""

from __future__ import annotations

import fcntl
import os
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from catdog.common.errors import UserError
from catdog.settings.project import project_root

URI_ENV = "MLFLOW_TRACKING_URI"
SQLITE_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
REMOTE_SCHEMES = ("http://", "https://")
# A read every client may make: what the server answers it shows whether this client's credentials get in.
CREDENTIALS_PROBE = "/api/2.0/mlflow/experiments/search"


class StoreError(UserError, RuntimeError):
    """The tracking store cannot be used: the message names its URI, what it answered and what to do."""

    kind = "tracking error"


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
            get_default_host_creds(uri),
            CREDENTIALS_PROBE,
            "GET",
            max_retries=0,
            timeout=timeout_s,
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
                return mlflow.set_experiment(
                    experiment_id=client.create_experiment(experiment, artifacts)
                ).experiment_id
            return mlflow.set_experiment(experiment_id=found.experiment_id).experiment_id
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def tracking_uri(configured: str) -> str:
    """$MLFLOW_TRACKING_URI, else the configured URI, else an SQLite file at the repository root (absolute)."""
    uri = os.environ.get(URI_ENV) or configured
    if uri:
        return uri
    return f"sqlite:///{project_root() / SQLITE_FILE}"
