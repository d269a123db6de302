"""MLflow glue: what ties a run to its code, data and machine, and what a run logs (catdog.store reaches the store)."""

from __future__ import annotations

import logging
import os
import subprocess
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from mlflow.entities import Metric
from omegaconf import DictConfig, OmegaConf

from catdog.checkpoints import History, State
from catdog.config import DVC_EXPERIMENT_ENV
from catdog.files import sha256_file
from catdog.machine import describe
from catdog.study import study_run

log = logging.getLogger(__name__)

PARAM_VALUE_LIMIT = 6000
SENTINEL_METRIC = "loss"
# Runs made by `dvc exp run` carry the experiment's name (from DVC_EXPERIMENT_ENV) in this tag.
DVC_EXPERIMENT_TAG = "dvc_experiment"
# What decides the study's results: a change to any of these since the commit makes the work tree dirty (the
# pipeline's own outputs, which `dvc repro` rewrites as it goes, do not count).
STUDY_INPUTS = ("src", "conf", "params.yaml", "dvc.yaml")


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
    it, the DVC experiment it ran in, and the machine."""
    experiment = os.environ.get(DVC_EXPERIMENT_ENV)
    tags = {"machine": describe(), **({DVC_EXPERIMENT_TAG: experiment} if experiment else {})}
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
    study = cfg.trainer.outputs == "study"
    run = mlflow.start_run(experiment_id=experiment_id, run_name=study_run(cfg.name, cfg.seed) if study else cfg.name)
    mlflow.log_params({**flat_params(cfg), "data.version": version})
    mlflow.set_tags({"variant": cfg.name, "seed": str(cfg.seed), "data_version": version, **source_tags()})
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
