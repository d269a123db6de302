"""A local team tracking server to try the team setup with: a PostgreSQL cluster and `mlflow server` with MLflow's
basic-auth app, both on 127.0.0.1, everything under one folder, started and stopped by the same command:

    uv run python -m catdog.team_server start [--folder F] [--artifacts s3://bucket/path]
    uv run python -m catdog.team_server add-user alice        # prints her password once
    uv run python -m catdog.team_server stop

The admin password comes from $MLFLOW_AUTH_ADMIN_PASSWORD, else is generated into <folder>/admin_password (0600).
Nothing here is the project's config: it is a machine's server, as `mlflow server` on a team's host would be.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from catdog.files import write_text
from catdog.pg import Cluster, free_port

ADMIN = "admin"
STATE = "server.json"
HEALTH_TIMEOUT_S = 90


def default_folder() -> Path:
    """Root's home is closed to the postgres user the cluster runs as, so root's server lives in /var/lib."""
    return Path("/var/lib/catdog-team") if os.geteuid() == 0 else Path.home() / ".catdog" / "team-server"


def secret(folder: Path, env: str, name: str) -> str:
    """$`env` if set, else the one generated into <folder>/<name> (0600) the first time."""
    given = os.environ.get(env)
    if given:
        return given
    saved = folder / name
    if not saved.exists():
        saved.touch(mode=0o600)
        saved.write_text(secrets.token_urlsafe(18))
    return saved.read_text().strip()


def admin_password(folder: Path) -> str:
    return secret(folder, "MLFLOW_AUTH_ADMIN_PASSWORD", "admin_password")


def auth_config(folder: Path, database_uri: str) -> Path:
    """MLflow's basic-auth settings: users in the cluster's own database, every user may read and edit runs, and a
    checked password trusted for a minute (MLflow hashes it with PBKDF2 on every request otherwise: a training run
    makes hundreds; with one server worker the cache cannot go stale)."""
    ini = folder / "basic_auth.ini"
    write_text(ini, "\n".join([
        "[mlflow]",
        "default_permission = EDIT",
        f"database_uri = {database_uri}",
        f"admin_username = {ADMIN}",
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
        "auth_cache_ttl_seconds = 60",
        "",
    ]))
    return ini


def wait_healthy(uri: str, server: subprocess.Popen, log: Path, timeout_s: float = HEALTH_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and server.poll() is None:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                return
        time.sleep(0.5)
    what = f"exited with {server.returncode}" if server.poll() is not None else f"did not answer in {timeout_s:.0f} s"
    raise RuntimeError(f"mlflow server {uri} {what}; its log ({log}):\n"
                       f"{log.read_text()[-3000:] if log.exists() else '(none)'}")


def start(folder: Path, artifacts: str | None = None, port: int | None = None) -> dict:
    """Start (or restart) the cluster and the server under `folder`; return the state clients need."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o711)  # the postgres user passes through to its cluster folder; nothing else is readable
    stop(folder)
    cluster = Cluster(folder / "postgres")
    cluster.start()
    for database in ("mlflow", "mlflow_auth"):
        cluster.create_database(database)
    port = port or free_port()
    uri = f"http://127.0.0.1:{port}"
    log = folder / "mlflow-server.log"
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(auth_config(folder, cluster.uri("mlflow_auth"))),
           "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password(folder),
           # Signs the UI's CSRF tokens; the same across restarts so open browser sessions stay valid.
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secret(folder, "MLFLOW_FLASK_SERVER_SECRET_KEY", "flask_secret_key"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    destination = artifacts or (folder / "artifacts").as_uri()
    with open(log, "ab") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1", "--backend-store-uri", cluster.uri("mlflow"),
             "--artifacts-destination", destination],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    state = {"uri": uri, "pid": server.pid, "postgres": str(cluster.data), "artifacts": destination}
    write_text(folder / STATE, json.dumps(state, indent=2) + "\n")
    try:
        wait_healthy(uri, server, log)
    except RuntimeError:
        stop(folder)
        raise
    return state


def read_state(folder: Path) -> dict | None:
    path = folder / STATE
    return json.loads(path.read_text()) if path.exists() else None


def stop(folder: Path) -> None:
    """Stop the server (its whole process group: it runs workers) and the cluster; a no-op where none runs."""
    state = read_state(folder)
    if state:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(state["pid"], signal.SIGTERM)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):  # reap it where this process started it
                    os.waitpid(state["pid"], os.WNOHANG)
                os.killpg(state["pid"], 0)
                time.sleep(0.2)
            os.killpg(state["pid"], signal.SIGKILL)
        (folder / STATE).unlink()
    Cluster(folder / "postgres").stop()


def add_user(folder: Path, username: str, password: str | None = None) -> str:
    """Create a user through the server's auth API with the admin's credentials; return the password."""
    from mlflow.server import get_app_client

    state = read_state(folder)
    if state is None:
        raise RuntimeError(f"no team server runs from {folder}; start it first")
    password = password or secrets.token_urlsafe(12)
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ.update(MLFLOW_TRACKING_USERNAME=ADMIN, MLFLOW_TRACKING_PASSWORD=admin_password(folder))
    try:
        get_app_client("basic-auth", tracking_uri=state["uri"]).create_user(username, password)
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    return password


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "stop", "status", "add-user"])
    parser.add_argument("username", nargs="?")
    parser.add_argument("--folder", type=Path, default=default_folder())
    parser.add_argument("--artifacts", help="artifact store URI (default: <folder>/artifacts)")
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    if args.command == "start":
        state = start(args.folder, args.artifacts, args.port)
        print(f"MLflow server with basic auth at {state['uri']} (PostgreSQL cluster {state['postgres']}, artifacts "
              f"{state['artifacts']}); admin password in {args.folder / 'admin_password'} unless "
              f"$MLFLOW_AUTH_ADMIN_PASSWORD gave it")
    elif args.command == "stop":
        stop(args.folder)
        print(f"stopped the team server under {args.folder}")
    elif args.command == "status":
        state = read_state(args.folder)
        print(json.dumps(state, indent=2) if state else f"no team server runs from {args.folder}")
    else:
        if not args.username:
            parser.error("add-user needs a username")
        password = add_user(args.folder, args.username)
        print(f"export MLFLOW_TRACKING_USERNAME={args.username} MLFLOW_TRACKING_PASSWORD={password}")


if __name__ == "__main__":
    main()
