"""MLflow glue: what ties a run to its code, data and machine, and what a run logs (catdog.tracking.connect reaches the store)."""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from catdog.common.files import sha256_file
from catdog.common.machine import fingerprint, words

PARAM_VALUE_LIMIT = 6000
# `dvc exp run` names its experiment in this variable.
DVC_EXPERIMENT_ENV = "DVC_EXP_NAME"
# Runs made by `dvc exp run` carry the experiment's name (from DVC_EXPERIMENT_ENV) in this tag.
DVC_EXPERIMENT_TAG = "dvc_experiment"
# What decides the study's results: a change to any of these since the commit makes the work tree dirty (the
# pipeline's own outputs, which `dvc repro` rewrites as it goes, do not count).
STUDY_INPUTS = ("src", "conf", "params.yaml", "dvc.yaml")
# The machine fingerprint in full (catdog.common.machine), as JSON; a run's record lifts it out (records.write_record).
FINGERPRINT_TAG = "machine_fingerprint"


def machine_tags(threads: int | None = None, precision: str | None = None) -> dict[str, str]:
    """The machine a run ran on: in words (`machine`), its fingerprint's id (`machine_id`) and in full; `threads`
    and `precision` are a training run's."""
    machine = fingerprint(threads, precision)
    return {"machine": words(machine), "machine_id": machine["id"], FINGERPRINT_TAG: json.dumps(machine)}


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
    it, the DVC experiment it ran in, and the machine (a training run adds its threads and precision)."""
    experiment = os.environ.get(DVC_EXPERIMENT_ENV)
    tags = {**machine_tags(), **({DVC_EXPERIMENT_TAG: experiment} if experiment else {})}
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": "unknown", "git_dirty": "unknown", **tags}
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", *STUDY_INPUTS)
    return {"git_commit": commit, "mlflow.source.git.commit": commit, "git_dirty": str(bool(dirty)).lower(), **tags}


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
        _log_input(dataset, context)


# Runs that log the same split at the same moment race in MLflow's store: each finds no row for (experiment, name,
# digest), each inserts one, and the later insert fails on the unique key (seen with SQLite, and with PostgreSQL
# behind the team's server). By the retry the first run's row is there, and the run links to it.
_DATASET_RACE = ("UNIQUE constraint failed: datasets.", 'unique constraint "dataset_pk"')


def _log_input(dataset: Any, context: str, attempts: int = 3) -> None:
    for attempt in range(attempts):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except MlflowException as error:
            if attempt == attempts - 1 or not any(race in str(error) for race in _DATASET_RACE):
                raise
