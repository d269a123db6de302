"""A local team tracking server to try the team setup with: a PostgreSQL cluster and `mlflow server` with MLflow's
basic-auth app, both on 127.0.0.1, everything under one folder, started and stopped by the same command:

    uv run python -m catdog.team_server start [--folder F] [--artifacts s3://bucket/path | --s3]
    uv run python -m catdog.team_server add-user alice        # prints her password once
    uv run python -m catdog.team_server stop

`--s3` also starts a local S3 API server (catdog.swift) under <folder>/s3 with a bucket for the artifacts and one
for a DVC remote. The admin password comes from $MLFLOW_AUTH_ADMIN_PASSWORD, else is generated into <folder>/admin_password (0600).
Nothing here is the project's config: it is a machine's server, as `mlflow server` on a team's host would be.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import warnings
from pathlib import Path

from catdog.files import write_text
from catdog.loopback import free_port, generated_secret, stop_group, wait_http
from catdog.pg import Cluster
from catdog.swift import S3Server

ADMIN = "admin"
STATE = "server.json"
HEALTH_TIMEOUT_S = 90
BUCKETS = ("mlflow", "dvc")


def default_folder() -> Path:
    """Root's home is closed to the postgres user the cluster runs as, so root's server lives in /var/lib."""
    return Path("/var/lib/catdog-team") if os.geteuid() == 0 else Path.home() / ".catdog" / "team-server"


def secret(folder: Path, env: str, name: str) -> str:
    """$`env` if set, else the one generated into <folder>/<name> (0600) the first time."""
    return os.environ.get(env) or generated_secret(folder / name)


def admin_password(folder: Path) -> str:
    return secret(folder, "MLFLOW_AUTH_ADMIN_PASSWORD", "admin_password")


def auth_config(folder: Path, database_uri: str) -> Path:
    """MLflow's basic-auth settings: users in the cluster's own database, every user may read and edit runs, and a
    checked password trusted for a minute (MLflow hashes it with PBKDF2 on every request otherwise: a training run
    makes hundreds; with one server worker the cache cannot go stale)."""
    ini = folder / "basic_auth.ini"
    write_text(
        ini,
        "\n".join(
            [
                "[mlflow]",
                "default_permission = EDIT",
                f"database_uri = {database_uri}",
                f"admin_username = {ADMIN}",
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
                "auth_cache_ttl_seconds = 60",
                "",
            ]
        ),
    )
    return ini


def local_s3(folder: Path) -> tuple[str, dict[str, str]]:
    """Start a local S3 API server (catdog.swift) under <folder>/s3 with the buckets `mlflow` (the server's
    artifacts) and `dvc` (the team's DVC remote); return the artifact destination and the server's S3 settings."""
    s3 = S3Server(folder / "s3")
    s3.start()
    for bucket in BUCKETS:
        s3.create_bucket(bucket)
    return f"s3://{BUCKETS[0]}/artifacts", s3.env()


def start(folder: Path, artifacts: str | None = None, port: int | None = None, s3: bool = False) -> dict:
    """Start (or restart) the cluster and the server under `folder` (`s3`: with a local S3 server for its artifacts
    and a DVC remote); return the state clients need."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o711)  # the postgres user passes through to its cluster folder; nothing else is readable
    stop(folder)
    s3_env = {}
    if s3:
        artifacts, s3_env = local_s3(folder)
    cluster = Cluster(folder / "postgres")
    cluster.start()
    for database in ("mlflow", "mlflow_auth"):
        cluster.create_database(database)
    kept = folder / "port"  # the URI stays the same across restarts: clients keep it in MLFLOW_TRACKING_URI
    port = port or (int(kept.read_text()) if kept.exists() else free_port())
    kept.write_text(str(port))
    uri = f"http://127.0.0.1:{port}"
    log = folder / "mlflow-server.log"
    env = {
        **os.environ,
        **s3_env,
        "MLFLOW_AUTH_CONFIG_PATH": str(auth_config(folder, cluster.uri("mlflow_auth"))),
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password(folder),
        # Signs the UI's CSRF tokens; the same across restarts so open browser sessions stay valid.
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret(folder, "MLFLOW_FLASK_SERVER_SECRET_KEY", "flask_secret_key"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    destination = artifacts or (folder / "artifacts").as_uri()
    with open(log, "ab") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--app-name",
                "basic-auth",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--backend-store-uri",
                cluster.uri("mlflow"),
                "--artifacts-destination",
                destination,
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    state = {"uri": uri, "pid": server.pid, "postgres": str(cluster.data), "artifacts": destination}
    if s3:
        state["s3"] = {
            "endpoint": s3_env["MLFLOW_S3_ENDPOINT_URL"],
            "access_key": s3_env["AWS_ACCESS_KEY_ID"],
            "secret_file": str(folder / "s3" / "s3_secret"),
            "dvc_remote": f"s3://{BUCKETS[1]}/catdog",
        }
    write_text(folder / STATE, json.dumps(state, indent=2) + "\n")
    try:
        wait_http(f"{uri}/health", server, log, "mlflow server", HEALTH_TIMEOUT_S)
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
        stop_group(state["pid"])
        (folder / STATE).unlink()
    Cluster(folder / "postgres").stop()
    S3Server(folder / "s3").stop()


def add_user(folder: Path, username: str, password: str | None = None, new_password: bool = False) -> str:
    """Create a user (`new_password`: give an existing one a new password) through the server's auth API with the
    admin's credentials; return the password."""
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    # mlflow.server's FastAPI app imports a Starlette module Starlette says is deprecated: nothing a user can act on.
    warnings.filterwarnings("ignore", message="starlette.middleware.wsgi is deprecated")

    state = read_state(folder)
    if state is None:
        raise RuntimeError(f"no team server runs from {folder}; start it first")
    password = password or secrets.token_urlsafe(12)
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ.update(MLFLOW_TRACKING_USERNAME=ADMIN, MLFLOW_TRACKING_PASSWORD=admin_password(folder))
    try:
        client = get_app_client("basic-auth", tracking_uri=state["uri"])
        if new_password:
            client.update_user_password(username, password)
        else:
            client.create_user(username, password)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_ALREADY_EXISTS":
            raise RuntimeError(
                f"user {username!r} exists already on {state['uri']}; `add-user {username} "
                "--new-password` gives them a new one"
            ) from exc
        raise
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
    parser.add_argument("--new-password", action="store_true", help="add-user: a new password for an existing user")
    parser.add_argument(
        "--s3", action="store_true", help="also start a local S3 server (Swift) for the artifacts and a DVC remote"
    )
    args = parser.parse_args(argv)
    if args.command == "start":
        if args.s3 and args.artifacts:
            parser.error("--s3 starts its own bucket for the artifacts: give --s3 or --artifacts, not both")
        state = start(args.folder, args.artifacts, args.port, args.s3)
        print(
            f"MLflow server with basic auth at {state['uri']} (PostgreSQL cluster {state['postgres']}, artifacts "
            f"{state['artifacts']}); admin password in {args.folder / 'admin_password'} unless "
            f"$MLFLOW_AUTH_ADMIN_PASSWORD gave it"
        )
        if args.s3:
            s3 = state["s3"]
            print(
                f"S3 API server (Swift) at {s3['endpoint']}, access key {s3['access_key']}, secret key in "
                f"{s3['secret_file']}; the team's DVC remote, in a clone:\n"
                f"  uv run dvc remote add --local -d team {s3['dvc_remote']}\n"
                f"  uv run dvc remote modify --local team endpointurl {s3['endpoint']}\n"
                f"  uv run dvc remote modify --local team access_key_id {s3['access_key']}\n"
                f"  uv run dvc remote modify --local team secret_access_key $(cat {s3['secret_file']})"
            )
    elif args.command == "stop":
        stop(args.folder)
        print(f"stopped the team server under {args.folder}")
    elif args.command == "status":
        state = read_state(args.folder)
        print(json.dumps(state, indent=2) if state else f"no team server runs from {args.folder}")
    else:
        if not args.username:
            parser.error("add-user needs a username")
        password = add_user(args.folder, args.username, new_password=args.new_password)
        print(f"export MLFLOW_TRACKING_USERNAME={args.username} MLFLOW_TRACKING_PASSWORD={password}")


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, OSError) as exc:  # what went wrong, in one line; the log it names has the rest
        sys.exit(f"team server error: {exc}")
