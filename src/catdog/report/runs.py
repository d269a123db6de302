"""What the study's runs recorded in their files, for the report: each variant's config against the baseline's,
and the commit, date, machine and wall time of each stage (records/train/*.json, reports/compare.json)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from omegaconf import DictConfig

from catdog.audit.findings import REPORT as AUDIT_REPORT
from catdog.common.machine import words
from catdog.settings.params import study_run
from catdog.settings.run_files import Outputs
from catdog.tracking.provenance import source_tags
from catdog.tracking.records import TIME_FORMAT, commit_of, read_record

# The config groups a variant composes; keys outside them (the run's name, Hydra's) say nothing about the model.
GROUPS = ("data.", "model.", "augment.", "optimizer.", "trainer.")
RUN_SPECIFIC = {"trainer.checkpoint_dir", "data.version"}  # differ from run to run by construction
ABSENT = "–"


def training_records(cfg: DictConfig, pairs: list[tuple[str, int]]) -> dict[str, dict]:
    """The record each train stage wrote of its run (variant, seed), keyed `<variant>-<seed>`."""
    return {
        study_run(v, s): read_record(Outputs.study(cfg.trainer, v, s).record, f"train@{study_run(v, s)}")
        for v, s in pairs
    }


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
    started: str  # "YYYY-MM-DD HH:MM:SS UTC"; ABSENT when not recorded
    seconds: float | None  # wall time; None when not recorded
    source: str  # where the numbers come from
    machine: str = ABSENT  # the run's `machine` tag (catdog.common.machine.describe); ABSENT when not recorded


def stage_times(
    records: dict[str, dict], training_seconds: dict[str, float], compared: dict, audited: dict
) -> list[StageTime]:
    """download and split record no time; the audit its wall time and machine in reports/audit.json (`audited`);
    each train stage its record (its run's span) and its metrics (training alone); compare the provenance it wrote
    into reports/compare.json."""
    rows = [
        StageTime(stage, ABSENT, ABSENT, None, "not recorded: the stage logs no run and writes no time")
        for stage in ("download", "split")
    ]
    rows.append(
        StageTime(
            "audit",
            ABSENT,
            ABSENT,
            audited["seconds"],
            f"{AUDIT_REPORT} (the stage logs no run: no commit or start time)",
            words(audited["machine"]),
        )
    )
    for name, record in records.items():
        rows.append(
            StageTime(
                f"train@{name}",
                commit_of(record["tags"]),
                record["started"],
                record["seconds"],
                f"records/train/{name}.json (run {record['mlflow']['run_id'][:8]}, start to end); training alone "
                f"{training_seconds[name]:.1f} s (metrics/train/{name}.json)",
                record["tags"].get("machine", ABSENT),
            )
        )
    rows.append(
        StageTime(
            "compare",
            commit_of(compared["tags"]),
            compared["started"],
            compared["seconds"],
            f"reports/compare.json (run {compared['mlflow']['run_id'][:8]})",
            compared["tags"].get("machine", ABSENT),
        )
    )
    return rows


def this_stage(started: datetime, seconds: float) -> StageTime:
    tags = source_tags()
    return StageTime(
        "report",
        commit_of(tags),
        started.strftime(TIME_FORMAT),
        seconds,
        "this report (up to writing it)",
        tags["machine"],
    )


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ABSENT
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)} min {rest:.0f} s" if minutes else f"{rest:.1f} s"
