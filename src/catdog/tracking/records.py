"""A run's record: the file copy of what its MLflow run says about it (the flat params it ran with, its source tags,
the machine fingerprint it ran on, its start and end time) and the MLflow ids as pointers. The train stage writes one per run beside its metrics
(records/train/<variant>-<seed>.json, in git); compare, report and publish read these files, never the store, so a
study pulled into another clone works against whatever store that clone uses."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import mlflow

from catdog.common.files import StudyFileMissing, required, write_json
from catdog.tracking.provenance import FINGERPRINT_TAG

TIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"


class RecordMissing(StudyFileMissing):
    """A file a stage reads about an earlier stage's run is not a record."""


def utc(millis: float) -> str:
    return datetime.fromtimestamp(millis / 1000, UTC).strftime(TIME_FORMAT)


def write_record(path: Path, run_id: str, pointers: dict[str, str]) -> dict:
    """Write the record of run `run_id` (the active run, as logged so far) with `pointers` (its logged models' URIs)
    to `path`, atomically; return it. The run ends now: its span is its start (the first attempt's, for a resumed
    run) to now."""
    run = mlflow.get_run(run_id)
    ended = time.time() * 1000
    tags = {k: v for k, v in sorted(run.data.tags.items()) if not k.startswith("mlflow.")}
    machine = json.loads(tags.pop(FINGERPRINT_TAG)) if FINGERPRINT_TAG in tags else None
    record = {
        "run": run.info.run_name,
        "started": utc(run.info.start_time),
        "ended": utc(ended),
        "seconds": round((ended - run.info.start_time) / 1000, 1),
        "params": dict(sorted(run.data.params.items())),
        "tags": tags,
        "machine": machine,
        "mlflow": {"experiment_id": run.info.experiment_id, "run_id": run.info.run_id, **pointers},
    }
    write_json(path, record)
    return record


def read_record(path: Path, stage: str) -> dict:
    """The record at `path`, or an error naming it and the stage that writes it."""
    try:
        record = json.loads(required(path, stage).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RecordMissing(f"{path} is not JSON ({exc.msg}); rerun `dvc repro {stage}`") from exc
    if not isinstance(record, dict) or not {"params", "tags", "mlflow"} <= set(record):
        raise RecordMissing(f"{path} is not a run record (no params, tags and mlflow ids); rerun `dvc repro {stage}`")
    return record


def commit_of(tags: dict[str, str]) -> str:
    """The short commit a run's code came from, `(dirty)` when the study's inputs differed from it."""
    commit = tags.get("git_commit", "unknown")
    if commit == "unknown":
        return commit
    return commit[:7] + (" (dirty)" if tags.get("git_dirty") == "true" else "")


def in_store(run_id: str) -> bool:
    """Whether the current tracking store holds run `run_id` (a pulled study's runs are in another store)."""
    try:
        mlflow.MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return False
    return True


def logged_model_in_store(uri: str) -> bool:
    """Whether the current tracking store holds the logged model `models:/m-…` that a record points at."""
    try:
        mlflow.MlflowClient().get_logged_model(uri.removeprefix("models:/"))
    except mlflow.exceptions.MlflowException:
        return False
    return True
