"""Where the project is: the folder that holds params.yaml and conf/ (a checkout, a DVC temporary experiment, or a
folder an installed package is pointed at), and the repository whose MLflow store a run uses by default."""

from __future__ import annotations

import os
from pathlib import Path

from catdog.settings.checks import ConfigError

# Where an installed catdog (or a command run outside the project) finds params.yaml and conf/.
PROJECT_ENV = "CATDOG_PROJECT"
PARAMS_NAME = "params.yaml"
CONF_NAME = "conf"
EXPERIMENT_TEMP_DIR = (".dvc", "tmp", "exps")


def project_dir(start: Path | None = None) -> Path:
    """The nearest folder from the working directory up that holds params.yaml (in a DVC temporary experiment, the
    experiment's own copy); outside any project, $CATDOG_PROJECT."""
    here = (start or Path.cwd()).resolve()
    found = next((p for p in (here, *here.parents) if (p / PARAMS_NAME).is_file()), None)
    if found is not None:
        return found
    configured = os.environ.get(PROJECT_ENV)
    if configured:
        return Path(configured).resolve()
    raise ConfigError(
        f"no {PARAMS_NAME} in {here} or above it; run the command in the catdog project, or set {PROJECT_ENV} to it"
    )


def params_file() -> Path:
    return project_dir() / PARAMS_NAME


def conf_dir() -> Path:
    return project_dir() / CONF_NAME


def project_root(start: Path | None = None) -> Path:
    """The repository holding dvc.yaml; from inside a DVC temporary experiment, the repository that launched it."""
    here = (start or Path.cwd()).resolve()
    root = next((p for p in (here, *here.parents) if (p / "dvc.yaml").is_file()), here)
    parts = root.parts
    for i in range(len(parts) - len(EXPERIMENT_TEMP_DIR)):
        if parts[i : i + len(EXPERIMENT_TEMP_DIR)] == EXPERIMENT_TEMP_DIR:
            return Path(*parts[:i])
    return root
