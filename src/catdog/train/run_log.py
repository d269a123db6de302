"""A training run in MLflow: opened (or continued after a kill) with its params, tags, config and data, and its
epochs logged as they finish."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import mlflow
from hydra.core.hydra_config import HydraConfig
from mlflow.entities import Metric
from omegaconf import DictConfig, OmegaConf

from catdog.settings.params import study_run
from catdog.tracking.provenance import flat_params, log_split_inputs, source_tags
from catdog.train.checkpoints import History, State

log = logging.getLogger(__name__)

SENTINEL_METRIC = "loss"
# MLflow 3's UI opens an experiment in its GenAI view (traces, prompts); this query opens the model-training one.
TRAINING_VIEW = "?workflowType=machine_learning"
NOTE_TAG = "mlflow.note.content"  # the run's description in the UI


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


def describe_run(name: str, metrics: dict) -> None:
    """The active run's one-line description in the UI: what it trained and how well."""
    mlflow.set_tag(
        NOTE_TAG,
        f"{name}: best val accuracy {metrics['best_val_accuracy']:.1%} at epoch {metrics['best_epoch']} of "
        f"{metrics['epochs_run']}",
    )


def where_to_look(uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page in MLflow's model-training view: on a tracking server its address; for a local store the
    address the UI gives it and the command that serves that UI."""
    page = f"#/experiments/{experiment_id}/runs/{run_id}{TRAINING_VIEW}"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{page}"
    serve = f"uv run mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000"
    return f"http://127.0.0.1:5000/{page} once `{serve}` serves the UI"
