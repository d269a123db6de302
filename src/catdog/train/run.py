"""One training run: config in, trained model, metrics and a complete MLflow run out."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import keras
import mlflow
import tensorflow as tf
from omegaconf import DictConfig, OmegaConf

from catdog.data.dataset import Split, configured_split
from catdog.data.manifests import check_split_settings
from catdog.settings.checks import validate
from catdog.tracking.connect import TrackingUnavailable, connect, lost, tracking_uri
from catdog.tracking.provenance import machine_tags
from catdog.train import onednn
from catdog.train.autoprecision import choose
from catdog.train.checkpoints import Checkpoints, State
from catdog.train.fit import TrainingDiverged, prepare_model, restore_best, run_phases, steps_per_epoch
from catdog.train.outputs import write_outputs
from catdog.train.precision import policy, resolve
from catdog.train.run_log import log_pending_epochs, start_tracking
from catdog.train.threads import size_thread_pools

__all__ = ["TrainingDiverged", "fingerprint", "train"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow, and make TensorFlow's kernels deterministic."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def fingerprint(cfg: DictConfig, data_version: str) -> str:
    """A hash of everything that shapes the run except whether to resume: a changed config or a re-drawn split
    never resumes."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["trainer"].pop("resume", None)
    resolved["data_version"] = data_version
    return hashlib.sha256(OmegaConf.to_yaml(OmegaConf.create(resolved)).encode()).hexdigest()[:16]


def load_data(cfg: DictConfig) -> dict[str, Split]:
    return {name: configured_split(cfg.data, name, cfg.trainer.image_size) for name in ("train", "val")}


def finish(
    cfg: DictConfig, model: keras.Model, state: State, checkpoints: Checkpoints, data: dict[str, Split], seconds: float
) -> dict:
    """Restore the best epoch's weights (with early stopping), then write the run's outputs."""
    if cfg.trainer.early_stopping.enabled:
        restore_best(model, checkpoints, state)
    return write_outputs(cfg, model, state, data, seconds)


def train(cfg: DictConfig) -> dict:
    """Train one configured run end to end; return its metrics. Resumes an interrupted run of the same config."""
    validate(cfg)
    threads = size_thread_pools(cfg.trainer.threads)  # before TensorFlow runs its first op
    version = check_split_settings(cfg.data)
    uri = tracking_uri(cfg.tracking.uri)
    experiment_id = connect(uri, cfg.tracking.experiment, cfg.tracking.connect_timeout_s)
    dnn = onednn.decision()  # made before TensorFlow was imported (src/train.py): recorded here
    tags, metrics = {"tf_threads": str(threads), **dnn.tags()}, dnn.metrics()
    if cfg.trainer.precision == "auto":  # before the run's seeds are set: the probe's models leave no trace
        decision = choose(cfg, threads)
        precision = decision.precision
        metrics |= decision.metrics()
        tags.update(decision.tags())
    else:
        precision = resolve(cfg.trainer.precision)
    tags |= {"precision": precision, **machine_tags(threads, precision)}
    try:
        with policy(precision):
            return _train(cfg, version, (uri, experiment_id), tags, metrics)
    except Exception as exc:
        gone = server_lost(exc)
        if gone is None:
            raise
        cause = gone.__cause__
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} stopped answering during the run "
            f"({(str(cause).splitlines() or [type(cause).__name__])[0]}); "
            f"the checkpoint of its last epoch is kept in {cfg.trainer.checkpoint_dir}: run the same command "
            "again once the server is back, and training continues in the same MLflow run"
        ) from cause


class ServerLost(Exception):
    """The run failed with its tracking server gone (the failure is its __cause__)."""


def server_lost(exc: BaseException | None) -> ServerLost | None:
    """The ServerLost behind `exc`: closing the MLflow run on the way out fails too when the server is gone, and
    that failure then carries the ServerLost as its context."""
    while exc is not None and not isinstance(exc, ServerLost):
        exc = exc.__context__
    return exc


def _train(
    cfg: DictConfig, version: str, store: tuple[str, str], tags: dict[str, str], metrics: dict[str, float]
) -> dict:
    """The run itself, tracked in `store` (the tracking URI and the experiment's id), tagged `tags`, with the
    one-off `metrics` (the precision probe's timings)."""
    uri, experiment_id = store
    seed_everything(cfg.seed)
    data = load_data(cfg)
    checkpoints = Checkpoints(Path(cfg.trainer.checkpoint_dir))
    key = fingerprint(cfg, version)
    state = checkpoints.load(key) if cfg.trainer.resume else None
    if state is None:
        checkpoints.clear()
    started, earlier = time.monotonic(), state.seconds if state else 0.0

    def elapsed() -> float:
        """Seconds of this run so far, up to its last checkpoint in earlier, interrupted attempts."""
        return earlier + time.monotonic() - started

    with start_tracking(cfg, state, experiment_id, version) as run:
        state = state or State(fingerprint=key, run_id=run.info.run_id)
        mlflow.set_tags(tags)
        if metrics:
            mlflow.log_metrics(metrics)
        try:
            model = prepare_model(cfg, state, checkpoints, cfg.trainer.epochs * steps_per_epoch(cfg, data))
            if state.history:
                log_pending_epochs(state.run_id, state.history)
            run_phases(cfg, model, state, checkpoints, data, elapsed)
            metrics = finish(cfg, model, state, checkpoints, data, elapsed())
        except Exception as exc:
            if isinstance(exc, TrainingDiverged):
                checkpoints.clear()
            if lost(uri, cfg.tracking.connect_timeout_s):
                raise ServerLost() from exc
            mlflow.set_tag("failure_reason", f"{type(exc).__name__}: {exc}"[:5000])
            mlflow.end_run("FAILED")
            raise
    checkpoints.clear()
    return metrics
