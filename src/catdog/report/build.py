"""The report stage: one self-contained HTML page of the whole study, from what the other stages wrote, logged to
the compare run in MLflow where the current store holds it.

It recomputes nothing the study recorded: the leaderboard, McNemar tests and champion come from
reports/compare.json, the champion's answers on the test split from reports/test_predictions.csv, the figures are the
stages' own PNGs, the counts metrics/data.json, the configs and times the runs' records (records/train/, and compare's
provenance in reports/compare.json): it reads no tracking store, so a pulled study builds the same page in any clone.
The one thing it computes is the champion's Grad-CAM of the test images it shows (catdog.report.explanations).
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from catdog.audit.findings import read_findings
from catdog.common.files import StudyFileMissing, read_json, required, write_text
from catdog.data.manifests import data_version
from catdog.report import audit_section, image_sections, sections, study_card
from catdog.report.explanations import CORRECT_PER_CLASS, MISCLASSIFIED_CAP, explain
from catdog.report.html import Html, Section, page
from catdog.report.runs import config_differences, stage_times, this_stage, training_records
from catdog.settings.checks import validate
from catdog.settings.params import study_run
from catdog.settings.run_files import Outputs
from catdog.tracking.connect import connect, tracking_uri
from catdog.tracking.records import in_store

TITLE = "Cats vs dogs: the study"
REFERENCE = "baseline"


@dataclass(frozen=True)
class Written:
    path: Path
    compare_run_id: str
    logged: bool
    misclassified_shown: int
    wrong_total: int


def compare_provenance(details: dict) -> dict:
    """What the compare stage wrote about itself into reports/compare.json: its commit, machine, times, run id."""
    if "provenance" not in details:
        raise StudyFileMissing(
            "reports/compare.json has no provenance (an older compare wrote it); rerun `dvc repro compare`"
        )
    return details["provenance"]


def data_card(cfg: DictConfig) -> Section:
    split_dir = Path(cfg.data.split_dir)
    report = read_json(cfg.data.report_path, "split")
    settings = read_json(split_dir / "split.json", "split")
    with open(required(split_dir / "rejects.csv", "split"), newline="", encoding="utf-8") as handle:
        rejects = list(csv.DictReader(handle))
    mirror = os.environ.get(cfg.data.mirror_env)
    facts = [
        ("source", Html("<br>".join(f"<code>{u}</code>" for u in cfg.data.urls))),
        ("local mirror ($" + cfg.data.mirror_env + ", this run)", mirror or "none: downloaded from the source"),
        ("data set", "cats_and_dogs_filtered: train folder → train; validation folder → val and test (stratified)"),
        ("split", f"seed {settings['split_seed']}, test fraction {settings['test_fraction']}"),
        ("data version", Html(f"<code>{data_version(split_dir)}</code> (content hash of the split's images)")),
        ("majority class (train)", report["majority_class"]),
    ]
    return study_card.data_card(facts, report["counts"], rejects, required(Path(cfg.data.samples_plot), "split"))


def build(cfg: DictConfig, started: datetime, clock: float) -> tuple[str, dict, int, int]:
    """The page's HTML, the compare stage's provenance, and how many mistakes it shows of how many. From the
    study's files alone: no tracking store is read."""
    variants, seeds = list(cfg.study.variants), [int(s) for s in cfg.study.seeds]
    details = read_json(cfg.compare.details, "compare")
    best = {v: details["validation"][v].get("seed", seeds[0]) for v in variants}  # each variant's best-val seed
    records = training_records(cfg, [(v, s) for v in variants for s in seeds])
    compared = compare_provenance(details)
    names = {study_run(v, s): (v, s) for v in variants for s in seeds}
    metrics = {n: read_json(Outputs.study(cfg.trainer, *vs).metrics, f"train@{n}") for n, vs in names.items()}
    outputs = {v: Outputs.study(cfg.trainer, v, best[v]) for v in variants}
    figures = Path(cfg.compare.plots_dir)
    explained = explain(cfg, details["champion"], best[details["champion"]])
    reference = REFERENCE if REFERENCE in variants else variants[0]
    differences = config_differences({v: records[study_run(v, best[v])]["params"] for v in variants}, reference)
    audited, findings = read_findings()
    times = stage_times(records, {n: m["seconds"] for n, m in metrics.items()}, compared, audited)
    times.append(this_stage(started, time.monotonic() - clock))
    notes = [
        "A commit marked (dirty) ran with changes to src/, conf/, params.yaml or dvc.yaml since that commit.",
        f"The champion is registered as {cfg.tracking.registered_model} version "
        f"{details.get('champion_version', '?')} (@{details.get('champion_alias', '?')}).",
    ]
    body = [
        sections.leaderboard(details, required(figures / "test_accuracy.png", "compare")),
        sections.mcnemar(details),
        sections.variants(differences, variants, reference),
        sections.curves(
            required(figures / "val_accuracy.png", "compare"),
            {v: required(outputs[v].curves, f"train@{study_run(v, best[v])}") for v in variants},
            {v: metrics[study_run(v, best[v])] for v in variants},
            best if len(seeds) > 1 else {},
        ),
        sections.confusion(required(figures / "confusion_matrices.png", "compare")),
        image_sections.mistakes(explained, MISCLASSIFIED_CAP),
        image_sections.correct(explained, CORRECT_PER_CLASS),
        data_card(cfg),
        audit_section.audit(Path(cfg.data.dataset_dir), audited, findings),
        image_sections.augmentation({v: o.augmentation for v, o in outputs.items() if o.augmentation.is_file()}),
        study_card.provenance(times, notes),
    ]
    html = page(TITLE, sections.summary(details), body)
    return html, compared, len(explained.misclassified), explained.wrong_total


def write_report(cfg: DictConfig, dest: str | Path) -> Written:
    """Write the report to `dest` (atomically); log it to the compare run as `study.html` when the current tracking
    store holds that run (a pulled study's compare run may be in another store: then the page is only written)."""
    clock, started = time.monotonic(), datetime.now(UTC)
    validate(cfg)
    html, compared, shown, wrong = build(cfg, started, clock)
    dest = Path(dest)
    write_text(dest, html)
    run_id = compared["mlflow"]["run_id"]
    connect(tracking_uri(cfg.tracking.uri), cfg.tracking.experiment, cfg.tracking.connect_timeout_s)
    logged = in_store(run_id)
    if logged:
        MlflowClient().log_artifact(run_id, str(dest))
    return Written(dest, run_id, logged, shown, wrong)
