"""A study's files logged into the current tracking store: each training run from its record (params, tags, times),
its per-epoch history (history.csv) and final metrics, with its models logged from the model file DVC tracks; then
the compare run from reports/compare.json with its leaderboard and figures, and the champion registered.

Idempotent: a run already in the store (the store that trained it, or an earlier publish, which tags each run it
makes `published_from`) is left alone, so a second call adds nothing.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
from mlflow.entities import Metric, Param
from omegaconf import DictConfig

from catdog.common.files import read_json
from catdog.settings.params import study_run
from catdog.settings.run_files import Outputs
from catdog.tracking.records import TIME_FORMAT, RecordMissing, in_store, read_record

PUBLISHED_FROM = "published_from"
BATCH = 100  # MLflow's limit of params per log_batch call
EXAMPLE_IMAGES = 2  # the logged Keras model's signature, from a batch of this many blank images


@dataclass
class Published:
    added: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    registered: tuple[str, str] | None = None


def millis(stamp: str) -> int:
    return int(datetime.strptime(stamp, TIME_FORMAT).replace(tzinfo=UTC).timestamp() * 1000)


def published(experiment_id: str, run_id: str) -> bool:
    """Whether the store holds run `run_id` itself or a run published from it."""
    if in_store(run_id):
        return True
    query = f"tags.{PUBLISHED_FROM} = '{run_id}'"
    return bool(mlflow.MlflowClient().search_runs([experiment_id], query, max_results=1))


def history_metrics(path: Path, at: int) -> list[Metric]:
    """history.csv (one row per epoch) as MLflow metrics, step = epoch - 1, as training logged them."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [
        Metric(key, float(value), at, int(row["epoch"]) - 1)
        for row in rows
        for key, value in row.items()
        if key != "epoch"
    ]


def new_run(experiment_id: str, name: str, record: dict, params: dict[str, str]) -> str:
    """A finished-to-be run named `name`, started when `record` says, with its params and tags (and where from)."""
    client = mlflow.MlflowClient()
    tags = {**record["tags"], PUBLISHED_FROM: record["mlflow"]["run_id"]}
    run = client.create_run(experiment_id, start_time=millis(record["started"]), tags=tags, run_name=name)
    items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(items), BATCH):
        client.log_batch(run.info.run_id, params=items[start : start + BATCH])
    return run.info.run_id


def close(run_id: str, record: dict, metrics: list[Metric]) -> None:
    client = mlflow.MlflowClient()
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start : start + 1000])
    client.set_terminated(run_id, "FINISHED", end_time=millis(record["ended"]))


def publish_training(cfg: DictConfig, experiment_id: str, variant: str, seed: int) -> str | None:
    """Publish run (variant, seed) unless the store has it; return the new run's classifier URI (None: present)."""
    outputs = Outputs.study(cfg.trainer, variant, seed)
    record = read_record(outputs.record, f"train@{study_run(variant, seed)}")
    if published(experiment_id, record["mlflow"]["run_id"]):
        return None
    import keras  # TensorFlow: only once a run is to be published

    from catdog.serve.classifier import log_classifier
    from catdog.tracking.registry import log_model

    run_id = new_run(experiment_id, record["run"], record, record["params"])
    at = millis(record["ended"])
    finals = json.loads(outputs.metrics.read_text(encoding="utf-8"))
    metrics = history_metrics(outputs.history, at) + [Metric(f"final_{k}", float(v), at, 0) for k, v in finals.items()]
    model = keras.models.load_model(outputs.model, compile=False)
    with mlflow.start_run(run_id=run_id):
        log_model(model, np.zeros((EXAMPLE_IMAGES, *model.input_shape[1:]), "float32"))
        classes, limit = list(cfg.data.classes), cfg.data.max_pixels
        uri = log_classifier(model, classes, max_pixels=limit, saved=outputs.model).model_uri
        for figure in (outputs.curves, outputs.augmentation):
            if figure.is_file():
                mlflow.log_artifact(str(figure), "figures")
    close(run_id, record, metrics)
    return uri


def read_details(path: Path) -> dict:
    """reports/compare.json with the provenance compare writes, or an error naming what to run."""
    details = read_json(path, "compare")
    if "provenance" not in details:
        raise RecordMissing(f"{path} has no provenance (an older compare wrote it); rerun `dvc repro compare`")
    return details


def publish_compare(cfg: DictConfig, experiment_id: str, details: dict, champion_uri: str) -> tuple[str, str] | None:
    """Publish the compare run unless the store has it, and register the champion's classifier (`champion_uri`, as
    just published or as the store holds it) as compare does; return (version, alias), None where present."""
    record = details["provenance"]
    if published(experiment_id, record["mlflow"]["run_id"]):
        return None
    from catdog.tracking.registry import register  # TensorFlow (through Keras): only once there is a run to publish

    run_id = new_run(experiment_id, "compare", record, {})
    at = millis(record["ended"])
    metrics = [Metric(f"{name}.test_accuracy", row["accuracy"], at, 0) for name, row in details["models"].items()]
    metrics += [Metric(f"{name}.test_ci_low", row["ci_low"], at, 0) for name, row in details["models"].items()]
    client = mlflow.MlflowClient()
    client.log_text(run_id, Path(cfg.compare.leaderboard).read_text(encoding="utf-8"), "leaderboard.md")
    client.log_dict(run_id, details, "compare.json")
    for figure in sorted(Path(cfg.compare.plots_dir).glob("*.png")):
        client.log_artifact(run_id, str(figure), "figures")
    close(run_id, record, metrics)
    champion, seed = details["champion"], details["validation"][details["champion"]]["seed"]
    tags = {"variant": champion, "seed": str(seed), "chosen_by": details["chosen_by"], PUBLISHED_FROM: run_id}
    return register(cfg.tracking, champion_uri, tags)


def champion_in_store(experiment_id: str, run_id: str) -> str:
    """The classifier URI of the store's copy of training run `run_id` (itself, or the run published from it)."""
    client = mlflow.MlflowClient()
    runs = [run_id] if in_store(run_id) else []
    runs += [r.info.run_id for r in client.search_runs([experiment_id], f"tags.{PUBLISHED_FROM} = '{run_id}'")]
    models = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{runs[0]}'")
    return next(f"models:/{m.model_id}" for m in models if m.name == "classifier")


def publish(cfg: DictConfig, experiment_id: str) -> Published:
    """Every training run of the study and its compare run, into the store (`experiment_id`), once."""
    done = Published()
    for variant in cfg.study.variants:
        for seed in cfg.study.seeds:
            name = study_run(variant, int(seed))
            added = publish_training(cfg, experiment_id, variant, int(seed))
            (done.added if added else done.present).append(name)
    details = read_details(Path(cfg.compare.details))
    champion = details["champion"]
    trained = read_record(
        Outputs.study(cfg.trainer, champion, details["validation"][champion]["seed"]).record, "compare"
    )
    uri = champion_in_store(experiment_id, trained["mlflow"]["run_id"])
    done.registered = publish_compare(cfg, experiment_id, details, uri)
    (done.added if done.registered else done.present).append("compare")
    return done
