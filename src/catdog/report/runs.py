"""What the study's MLflow runs recorded, for the report: each variant's config against the baseline's, and the
commit, date, machine and wall time of each stage."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from catdog.settings.params import study_run
from catdog.tracking.provenance import source_tags
from catdog.train.outputs import Outputs

# The config groups a variant composes; keys outside them (the run's name, Hydra's) say nothing about the model.
GROUPS = ("data.", "model.", "augment.", "optimizer.", "trainer.")
RUN_SPECIFIC = {"trainer.checkpoint_dir", "data.version"}  # differ from run to run by construction
ABSENT = "–"


class RunNotFound(RuntimeError):
    """A run the report needs is not in the tracking store."""


def training_runs(client: MlflowClient, cfg: DictConfig, pairs: list[tuple[str, int]]) -> dict[str, Run]:
    """The training run of each (variant, seed), keyed `<variant>-<seed>`, by the id its train stage wrote beside
    the model."""
    runs = {}
    for variant, seed in pairs:
        name = study_run(variant, seed)
        info = Outputs.study(cfg.trainer, variant, seed).run_info
        if not info.is_file():
            raise RunNotFound(f"run {name!r}: {info} not found; run `dvc repro train@{name}`")
        run_id = json.loads(info.read_text(encoding="utf-8"))["run_id"]
        runs[name] = get_run(client, run_id, f"train@{name}")
    return runs


def get_run(client: MlflowClient, run_id: str, stage: str) -> Run:
    try:
        return client.get_run(run_id)
    except Exception as exc:
        raise RunNotFound(
            f"{stage}: run {run_id} is not in the tracking store {client.tracking_uri}; point MLFLOW_TRACKING_URI "
            f"(or tracking.uri) at the store the study logged to, or rerun the stage"
        ) from exc


def config_differences(params: dict[str, dict[str, str]], reference: str) -> list[tuple[str, list[str]]]:
    """The config keys on which some variant differs from `reference`, with every variant's value (as logged)."""
    keys = sorted({k for p in params.values() for k in p if k.startswith(GROUPS) and k not in RUN_SPECIFIC})
    rows = []
    for key in keys:
        values = [p.get(key, ABSENT) for p in params.values()]
        if any(v != params[reference].get(key, ABSENT) for v in values):
            rows.append((key, values))
    return rows


@dataclass(frozen=True)
class StageTime:
    stage: str
    commit: str  # short hash, "(dirty)" when the study's inputs differed from it; ABSENT when not recorded
    started: str  # UTC; ABSENT when not recorded
    seconds: float | None  # wall time; None when not recorded
    source: str  # where the numbers come from
    machine: str = ABSENT  # the run's `machine` tag (catdog.common.machine.describe); ABSENT when not recorded


def commit_of(tags: dict[str, str]) -> str:
    commit = tags.get("git_commit", "unknown")
    if commit == "unknown":
        return commit
    return commit[:7] + (" (dirty)" if tags.get("git_dirty") == "true" else "")


def utc(millis: int | float) -> str:
    return datetime.fromtimestamp(millis / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def stage_times(
    runs: dict[str, Run], training_seconds: dict[str, float], compare_run: Run, compare_seconds: float | None
) -> list[StageTime]:
    """download and split record no time; each train stage its MLflow run (its span) and its metrics (training
    alone); compare its run and, from this version on, its seconds in reports/compare.json."""
    rows = [
        StageTime(stage, ABSENT, ABSENT, None, "not recorded: the stage logs no run and writes no time")
        for stage in ("download", "split")
    ]
    for name, run in runs.items():
        span = (run.info.end_time - run.info.start_time) / 1000 if run.info.end_time else None
        rows.append(
            StageTime(
                f"train@{name}",
                commit_of(run.data.tags),
                utc(run.info.start_time),
                span,
                f"MLflow run {run.info.run_id[:8]} (start to end); training alone {training_seconds[name]:.1f} s "
                f"(metrics/train/{name}.json)",
                run.data.tags.get("machine", ABSENT),
            )
        )
    source = "reports/compare.json" if compare_seconds is not None else "not recorded by this compare.json"
    rows.append(
        StageTime(
            "compare",
            commit_of(compare_run.data.tags),
            utc(compare_run.info.start_time),
            compare_seconds,
            f"MLflow run {compare_run.info.run_id[:8]}; seconds: {source}",
            compare_run.data.tags.get("machine", ABSENT),
        )
    )
    return rows


def this_stage(started: datetime, seconds: float) -> StageTime:
    tags = source_tags()
    return StageTime(
        "report",
        commit_of(tags),
        started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        seconds,
        "this report (up to writing it)",
        tags["machine"],
    )


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ABSENT
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)} min {rest:.0f} s" if minutes else f"{rest:.1f} s"
