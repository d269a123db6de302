"""The team server's users: created (or given a new password) through MLflow's basic-auth API with the admin's
credentials, each password kept in a 0600 file under <folder>/users/."""

from __future__ import annotations

import os
import re
from pathlib import Path

from catdog.team.server import ADMIN, TeamServerError, admin_password, running_state

USERNAME = re.compile(r"[A-Za-z0-9_@-][A-Za-z0-9._@-]*")


def add_user(folder: Path, username: str, password: str | None = None, new_password: bool = False) -> str:
    """Create a user (`new_password`: give an existing one a new password) through the server's auth API with the
    admin's credentials; return the password."""
    import secrets
    import warnings

    state = running_state(folder)
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    # mlflow.server's FastAPI app imports a Starlette module Starlette says is deprecated: nothing a user can act on.
    warnings.filterwarnings("ignore", message="starlette.middleware.wsgi is deprecated")
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
        raise user_error(exc, folder, state["uri"], username) from exc
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    return password


def user_error(exc: Exception, folder: Path, uri: str, username: str) -> Exception:
    """What the auth API's refusal `exc` means to the one who ran add-user (the exception itself where unknown)."""
    code = getattr(exc, "error_code", "")
    if code == "RESOURCE_ALREADY_EXISTS":
        return TeamServerError(
            f"user {username!r} exists already on {uri}; `add-user {username} --new-password` gives them a new one"
        )
    if code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        where = (
            "$MLFLOW_AUTH_ADMIN_PASSWORD" if os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD") else folder / "admin_password"
        )
        return TeamServerError(
            f"the server at {uri} refused the admin's password ({code}): {where} must hold the admin password the "
            "server was first started with"
        )
    return exc


def password_file(folder: Path, username: str) -> Path:
    """Where add-user keeps `username`'s password: <folder>/users/<username>.password."""
    if not USERNAME.fullmatch(username):
        raise TeamServerError(f"{username!r} is not a username here: letters, digits and . _ @ - only")
    return folder / "users" / f"{username}.password"
