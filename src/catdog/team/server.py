"""A local team tracking server to try the team setup with: a PostgreSQL cluster and `mlflow server` with MLflow's
basic-auth app, both on 127.0.0.1, everything under one folder, started and stopped by the same command:

    uv run python src/team_server.py start [--folder F] [--artifacts s3://bucket/path | --s3]
    uv run python src/team_server.py add-user alice        # her password into <folder>/users/alice.password
    uv run python src/team_server.py restart-mlflow        # the MLflow server alone, after it died
    uv run python src/team_server.py stop

`--s3` also starts a local S3 API server (catdog.team.swift) under <folder>/s3 with a bucket for the artifacts and one
for a DVC remote. The admin password comes from $MLFLOW_AUTH_ADMIN_PASSWORD, else is generated into
<folder>/admin_password. MLflow connects as the role `mlflow`, which owns its two databases and nothing else. Every
file holding a secret is 0600; the secrets reach the servers in their environment or such files, never on a command
line. Nothing here is the project's config: it is a machine's server, as `mlflow server` on a team's host would be.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from catdog.common.errors import UserError
from catdog.team.loopback import (
    checked_record,
    free_port,
    generated_secret,
    identity,
    private_dir,
    stop_recorded,
    wait_http,
    write_private,
)
from catdog.team.loopback import (
    read_state as read_state_file,
)
from catdog.team.postgres import Cluster
from catdog.team.swift import S3Server

ADMIN = "admin"
ROLE = "mlflow"  # PostgreSQL's role for MLflow: owns the tracking and auth databases, nothing else
DATABASES = ("mlflow", "mlflow_auth")
STATE = "server.json"
HEALTH_TIMEOUT_S = 90
BUCKETS = ("mlflow", "dvc")


class TeamServerError(UserError):
    """A team-server command cannot do what was asked: the message says what is wrong and what to do."""

    kind = "team server error"


def default_folder() -> Path:
    """Root's home is closed to the postgres user the cluster runs as, so root's server lives in /var/lib."""
    return Path("/var/lib/catdog-team") if os.geteuid() == 0 else Path.home() / ".catdog" / "team-server"


def secret(folder: Path, env: str, name: str) -> str:
    """$`env` if set, else the one generated into <folder>/<name> (0600) the first time."""
    return os.environ.get(env) or generated_secret(folder / name)


def admin_password(folder: Path) -> str:
    return secret(folder, "MLFLOW_AUTH_ADMIN_PASSWORD", "admin_password")


def auth_config(folder: Path, database_uri: str) -> Path:
    """MLflow's basic-auth settings (0600: they hold the auth database's password): users in the cluster's own
    database, every user may read and edit runs, and a checked password trusted for a minute (MLflow hashes it with
    PBKDF2 on every request otherwise: a training run makes hundreds; with one server worker the cache cannot go
    stale)."""
    ini = folder / "basic_auth.ini"
    settings = {
        "default_permission": "EDIT",
        "database_uri": database_uri,
        "admin_username": ADMIN,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "auth_cache_ttl_seconds": "60",
    }
    write_private(ini, "[mlflow]\n" + "".join(f"{key} = {value}\n" for key, value in settings.items()))
    return ini


def prepare_folder(folder: Path) -> None:
    """Create `folder` 0700 (0711 as root: the postgres user passes through to its cluster); an existing folder keeps
    its mode, but one others may write to is refused (they could swap the state file or the secrets)."""
    if not folder.is_dir():
        private_dir(folder, 0o711 if os.geteuid() == 0 else 0o700)
        return
    mode = folder.stat().st_mode & 0o777
    if mode & 0o022:
        raise TeamServerError(
            f"{folder} is writable by other users (mode {oct(mode)}), who could replace the server's state and "
            f"secrets; `chmod go-w {folder}`, or give a --folder that does not exist yet"
        )


def start(folder: Path, artifacts: str | None = None, port: int | None = None, s3: bool = False) -> dict:
    """Start (or restart) the cluster and the server under `folder` (`s3`: with a local S3 server for its artifacts
    and a DVC remote); return the state clients need."""
    prepare_folder(folder)
    stop(folder)
    if s3:
        s3_server = S3Server(folder / "s3")
        s3_server.start()
        for bucket in BUCKETS:
            s3_server.create_bucket(bucket)
        artifacts = f"s3://{BUCKETS[0]}/artifacts"
    cluster = Cluster(folder / "postgres")
    cluster.start()
    cluster.create_role(ROLE)
    for database in DATABASES:
        cluster.create_database(database, owner=ROLE)
    kept = folder / "port"  # the URI stays the same across restarts: clients keep it in MLFLOW_TRACKING_URI
    port = port or (int(kept.read_text()) if kept.exists() else free_port())
    kept.write_text(str(port))
    return serve(folder, port, artifacts or (folder / "artifacts").as_uri(), s3)


def serve(folder: Path, port: int, destination: str, s3: bool) -> dict:
    """Start `mlflow server` alone on the cluster (and S3 server) that run under `folder`, its secrets in its
    environment only; record it in the state file and return that state once it answers."""
    import subprocess

    cluster = Cluster(folder / "postgres")
    env = {
        **os.environ,
        **(S3Server(folder / "s3").env() if s3 else {}),
        "MLFLOW_BACKEND_STORE_URI": cluster.uri(DATABASES[0], role=ROLE),
        "MLFLOW_ARTIFACTS_DESTINATION": destination,
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_config(folder, cluster.uri(DATABASES[1], role=ROLE))),
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password(folder),
        # Signs the UI's CSRF tokens; the same across restarts so open browser sessions stay valid.
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret(folder, "MLFLOW_FLASK_SERVER_SECRET_KEY", "flask_secret_key"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        # MLflow's server-side jobs are GenAI ones (judges, evaluations, prompt optimisation: `@job` in
        # mlflow/genai); on by default they start a job runner and seven Huey consumers, eight more Python
        # processes next to a server that tracks training runs (`ps` under MLflow 3.17's `mlflow server`).
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    uri, log = f"http://127.0.0.1:{port}", folder / "mlflow-server.log"
    argv = ["-m", "mlflow", "server", "--app-name", "basic-auth", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "ab") as out:
        server = subprocess.Popen(
            [sys.executable, *argv, "--workers", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    state = {"uri": uri, "server": identity(server.pid), "postgres": str(cluster.data), "artifacts": destination}
    if s3:
        state["s3"] = {
            "endpoint": env["MLFLOW_S3_ENDPOINT_URL"],
            "access_key": env["AWS_ACCESS_KEY_ID"],
            "secret_file": str(folder / "s3" / "s3_secret"),
            "credentials_file": str(S3Server(folder / "s3").credentials_file),
            "dvc_remote": f"s3://{BUCKETS[1]}/catdog",
        }
    write_private(folder / STATE, json.dumps(state, indent=2) + "\n")
    try:
        wait_http(f"{uri}/health", server, log, "mlflow server", HEALTH_TIMEOUT_S)
        open_store(uri, folder)
    except (RuntimeError, OSError):
        stop(folder)
        raise
    return state


def open_store(uri: str, folder: Path) -> None:
    """One request as the admin: the server opens its store (migrating it on the first start, which takes longer
    than a client's first request may wait on a busy machine) before start returns."""
    import base64
    import urllib.error
    import urllib.request

    token = base64.b64encode(f"{ADMIN}:{admin_password(folder)}".encode()).decode()
    request = urllib.request.Request(
        f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", headers={"Authorization": f"Basic {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=HEALTH_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:  # the server answered; a wrong admin password is add-user's to report
        pass


def read_state(folder: Path) -> dict | None:
    return read_state_file(folder / STATE)


def running_state(folder: Path) -> dict:
    """The state of the server under `folder`, or a TeamServerError saying none runs there."""
    state = read_state(folder)
    if state is None:
        raise TeamServerError(f"no team server runs from {folder} (no {folder / STATE}); start it first")
    return state


def restart_mlflow(folder: Path) -> dict:
    """Start `mlflow server` again (stopping it first if it still runs) on the same port, store and artifacts, with
    the cluster and S3 server that run under `folder` left as they are."""
    state = running_state(folder)
    if state.get("server") and not stop_recorded(state["server"], "mlflow server"):
        raise TeamServerError(f"{folder / STATE} records a process that is not the server; `stop`, then `start`")
    return serve(folder, int(state["uri"].rsplit(":", 1)[1]), state["artifacts"], "s3" in state)


def stop(folder: Path) -> None:
    """Stop the server (its whole process group: it runs workers, and only while the recorded pid is still it), the
    cluster and the S3 server; a no-op where none runs."""
    state = read_state(folder)
    if state:
        if checked_record(state.get("server"), folder / STATE):
            stop_recorded(state["server"], "mlflow server")
        elif "pid" in state:  # an older state file: a pid alone cannot tell the server from a later process
            print(
                f"{folder / STATE} records no start time for pid {state.get('pid')}; not signalling it", file=sys.stderr
            )
        (folder / STATE).unlink()
    Cluster(folder / "postgres").stop()
    S3Server(folder / "s3").stop()


def runs(folder: Path) -> bool:
    """Whether anything `start` starts under `folder` may still run (per its state and pid files)."""
    recorded = (STATE, "postgres/postmaster.pid", "s3/s3.json")
    return any((folder / name).exists() for name in recorded)
