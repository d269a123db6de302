"""The team server's command line (`python src/team_server.py start|stop|status|add-user|restart-mlflow`): a
mistake or a failure prints one line on stderr and exits 1; `CATDOG_DEBUG=1` shows the traceback."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from catdog.common.errors import reports_user_errors
from catdog.team.loopback import private_dir, write_private
from catdog.team.server import TeamServerError, default_folder, read_state, restart_mlflow, runs, start, stop
from catdog.team.server import __doc__ as server_doc
from catdog.team.users import add_user, password_file


def print_started(state: dict, folder: Path) -> None:
    print(
        f"MLflow server with basic auth at {state['uri']} (PostgreSQL cluster {state['postgres']}, artifacts "
        f"{state['artifacts']}); admin password in {folder / 'admin_password'} unless $MLFLOW_AUTH_ADMIN_PASSWORD "
        "gave it"
    )
    if "s3" in state:
        s3 = state["s3"]
        print(
            f"S3 API server (Swift) at {s3['endpoint']}, access key {s3['access_key']}, secret key in "
            f"{s3['secret_file']}; the team's DVC remote, in a clone (the keys stay in the 0600 file it names):\n"
            f"  uv run dvc remote add --local -d team {s3['dvc_remote']}\n"
            f"  uv run dvc remote modify --local team endpointurl {s3['endpoint']}\n"
            f"  uv run dvc remote modify --local team credentialpath {s3['credentials_file']}"
        )


def new_user(folder: Path, username: str | None, new_password: bool, show: bool) -> None:
    """add-user: the password into its 0600 file; its path printed (the password itself only if `show`)."""
    if not username:
        raise TeamServerError("add-user needs a username: `add-user alice`")
    path = password_file(folder, username)
    password = add_user(folder, username, new_password=new_password)
    private_dir(path.parent)
    write_private(path, password + "\n")
    print(f"{username}'s password is in {path} (mode 0600); hand it over, then on their side:")
    secret_value = password if show else f"$(cat {path})"
    print(f'export MLFLOW_TRACKING_USERNAME={username} MLFLOW_TRACKING_PASSWORD="{secret_value}"')


@reports_user_errors
def main(argv: list[str] | None = None) -> None:
    """The command line: a mistake or a failure prints one line on stderr and exits 1."""
    commands = ["start", "stop", "status", "add-user", "restart-mlflow"]
    parser = argparse.ArgumentParser(description=server_doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=commands)
    parser.add_argument("username", nargs="?")
    parser.add_argument("--folder", type=Path, default=default_folder())
    parser.add_argument("--artifacts", help="artifact store URI (default: <folder>/artifacts)")
    parser.add_argument("--port", type=int)
    parser.add_argument("--new-password", action="store_true", help="add-user: a new password for an existing user")
    parser.add_argument("--print-password", action="store_true", help="add-user: also print the password itself")
    parser.add_argument("--s3", action="store_true", help="also start a local S3 server (Swift) for the artifacts")
    args = parser.parse_args(argv)
    if args.s3 and args.artifacts:
        parser.error("--s3 starts its own bucket for the artifacts: give --s3 or --artifacts, not both")
    try:
        run(args)
    except OSError as exc:  # a folder the user named cannot be made or read, a server binary is missing
        raise TeamServerError(f"{exc}; check --folder and that Debian's packages are installed") from exc


def run(args: argparse.Namespace) -> None:
    folder = args.folder
    if args.command == "start":
        print_started(start(folder, args.artifacts, args.port, args.s3), folder)
    elif args.command == "restart-mlflow":
        print_started(restart_mlflow(folder), folder)
    elif args.command == "stop":
        if not runs(folder):
            raise TeamServerError(f"no team server runs from {folder}: nothing to stop (--folder names another)")
        stop(folder)
        print(f"stopped the team server under {folder}")
    elif args.command == "status":
        state = read_state(folder)
        print(json.dumps(state, indent=2) if state else f"no team server runs from {folder}")
    else:
        new_user(folder, args.username, args.new_password, args.print_password)
