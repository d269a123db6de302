"""The comparison stage: every run of every variant evaluated on the held-out test split, each variant summed up over its
training seeds, ranked, and the champion registered."""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import mlflow
import numpy as np
from omegaconf import DictConfig
from tqdm import tqdm

from catdog.common.errors import UserError
from catdog.common.files import read_json, write_json, write_text
from catdog.compare.champion import register_champion
from catdog.compare.figures import draw_figures
from catdog.compare.leaderboard import MAJORITY, chosen_by, dvc_metrics, leaderboard, ranked
from catdog.compare.machines import machines_note, run_machine
from catdog.compare.over_seeds import best_on_validation, test_summary, validation_summary
from catdog.compare.predictions import Answers, write_predictions
from catdog.compare.statistics import log_loss, pairwise_tests, score
from catdog.data.dataset import Split, batches, configured_split
from catdog.data.manifests import data_version, majority_class, read_manifest
from catdog.settings.checks import validate
from catdog.settings.params import study_run
from catdog.settings.run_files import Outputs
from catdog.tracking.connect import connect, tracking_uri
from catdog.tracking.provenance import FINGERPRINT_TAG, log_split_inputs, source_tags
from catdog.tracking.records import utc
from catdog.train.dead_runs import METRIC as DEAD


class ModelLoadError(UserError, RuntimeError):
    """A variant's model file is missing or unreadable."""

    kind = "model error"


def fix(variant: str, seed: int) -> str:
    return f"run `dvc repro train@{study_run(variant, seed)}` (or `python src/train.py variant={variant} seed={seed} trainer.outputs=study`)"


def model_file(cfg: DictConfig, variant: str, seed: int) -> Path:
    """Where the model `variant` trained with `seed` is, or an error naming the run, the path and the fix."""
    path = Outputs.study(cfg.trainer, variant, seed).model
    if not path.is_file():
        raise ModelLoadError(f"run {study_run(variant, seed)!r}: model file {path} not found; {fix(variant, seed)}")
    return path


def load_variant(cfg: DictConfig, variant: str, seed: int) -> keras.Model:
    """The model `variant` trained with `seed`, or an error naming the run, the path and the fix."""
    path, run = model_file(cfg, variant, seed), study_run(variant, seed)
    try:
        # Uncompiled: only inference is needed, and the one-step predict loop traces faster than a multi-step one.
        return keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise ModelLoadError(
            f"run {run!r}: model file {path} could not be loaded ({exc}); {fix(variant, seed)}"
        ) from exc


def validation_scores(cfg: DictConfig, variant: str, seeds: list[int]) -> dict[int, dict]:
    """Best val accuracy, loss and epoch of each of `variant`'s runs, from the metrics its training wrote."""
    scores = {}
    for seed in seeds:
        path = Outputs.study(cfg.trainer, variant, seed).metrics
        metrics = read_json(path, f"train@{study_run(variant, seed)}")
        scores[seed] = {k: metrics[k] for k in ("best_val_accuracy", "best_val_loss", "best_epoch")}
        scores[seed][DEAD] = bool(metrics.get(DEAD, 0))  # metrics written before dead runs were named: learned
    return scores


def input_size(model: keras.Model) -> int:
    return int(model.input_shape[1])


def evaluate_runs(cfg: DictConfig, variant: str, seeds: list[int]) -> tuple[dict[int, dict], dict[int, Answers], Split]:
    """Each of `variant`'s runs scored on the test split (one model in memory at a time): rows, answers, and the
    test split at the size the variant's models take."""
    classes = list(cfg.data.classes)
    rows, answers = {}, {}
    for seed in seeds:
        model = load_variant(cfg, variant, seed)
        test = configured_split(cfg.data, "test", input_size(model))  # decoded once per size, then cached
        logits = model.predict(batches(test, cfg.trainer.batch_size, shuffle=False, seed=cfg.seed), verbose=0)
        answers[seed] = Answers.of(logits)
        rows[seed] = {**score(answers[seed].predicted, test.labels, classes), "loss": log_loss(logits, test.labels)}
        del model
    return rows, answers, test


def majority_row(cfg: DictConfig, labels: np.ndarray) -> dict:
    """The scores of always guessing the train split's majority class."""
    classes = list(cfg.data.classes)
    majority = majority_class(read_manifest(Path(cfg.data.split_dir) / "train.csv"), classes)
    return {**score(np.full_like(labels, classes.index(majority)), labels, classes), "loss": None}


def compare(cfg: DictConfig) -> dict:
    """Evaluate every run of every variant on the test split; write the report, figures and metrics; register the
    champion (picked by mean val accuracy over seeds) as its best-validation seed's model."""
    started = time.monotonic()
    validate(cfg)
    variants, seeds = list(cfg.study.variants), [int(s) for s in cfg.study.seeds]
    for variant in variants:  # every run's model is there before anything is read, logged or connected to
        for seed in seeds:
            model_file(cfg, variant, seed)
    experiment_id = connect(tracking_uri(cfg.tracking.uri), cfg.tracking.experiment, cfg.tracking.connect_timeout_s)
    per_seed = {v: validation_scores(cfg, v, seeds) for v in variants}
    machines = {
        study_run(v, s): run_machine(Outputs.study(cfg.trainer, v, s).record, f"train@{study_run(v, s)}")
        for v in variants
        for s in seeds
    }
    val = {v: validation_summary(per_seed[v]) for v in variants}
    champion = best_on_validation(val)
    rows, outcome, runs, answers = {}, {"correct": {}, "predictions": {}}, {}, {}
    for variant in tqdm(variants, desc="compare: test split", unit="variant", disable=None):
        seed_rows, seed_answers, split = evaluate_runs(cfg, variant, seeds)
        if variant == champion:
            test = split  # the champion's images at its input size, for its mistakes figure
        rows[variant] = test_summary(seed_rows, val[variant]["seed"])
        outcome["predictions"][variant] = seed_answers[val[variant]["seed"]].predicted
        answers |= {study_run(variant, s): a for s, a in seed_answers.items()}
        runs |= {
            study_run(variant, s): {
                "variant": variant,
                "seed": s,
                **per_seed[variant][s],
                "test_accuracy": r["accuracy"],
                "test_loss": r["loss"],
                "machine_id": machines[study_run(variant, s)]["id"],
            }
            for s, r in seed_rows.items()
        }
    outcome["correct"] = {v: p == test.labels for v, p in outcome["predictions"].items()}
    rows[MAJORITY] = majority_row(cfg, test.labels)
    ranking = ranked(rows)
    tests = pairwise_tests(outcome["correct"])
    version = data_version(Path(cfg.data.split_dir))
    report = leaderboard(ranking, tests, len(test.labels), version, champion, val, seeds, machines_note(machines))
    histories = {v: Outputs.study(cfg.trainer, v, val[v]["seed"]).history for v in variants}
    figures = draw_figures(cfg, ranking, outcome, test, champion, histories, Path(cfg.compare.plots_dir))
    details = {
        "champion": champion,
        "chosen_by": chosen_by(len(seeds)),
        "n_test": len(test.labels),
        "seeds": seeds,
        "validation": val,
        "models": rows,
        "runs": runs,
        "pairwise": tests,
        "machines": {m["id"]: m["words"] for m in machines.values()},
    }
    tags = {"stage": "compare", "data_version": version, "champion": champion, **source_tags()}
    with mlflow.start_run(experiment_id=experiment_id, run_name="compare") as run:
        mlflow.set_tags(tags)
        for name, row in rows.items():
            mlflow.log_metrics({f"{name}.test_accuracy": row["accuracy"], f"{name}.test_ci_low": row["ci_low"]})
        mlflow.log_text(report, "leaderboard.md")
        mlflow.log_dict(details, "compare.json")
        for path in figures.values():
            mlflow.log_artifact(str(path), "figures")
        log_split_inputs(Path(cfg.data.split_dir), {"test": "test"})
        registered = register_champion(cfg, champion, rows[champion], val[champion])
    details["champion_version"], details["champion_alias"] = registered
    # What the report shows of this stage (commit, machine, time) and the run it logs its page to, if in its store.
    details["provenance"] = {
        "started": utc(run.info.start_time),
        "ended": utc(time.time() * 1000),
        "seconds": round(time.monotonic() - started, 1),
        "tags": {k: v for k, v in sorted(tags.items()) if not k.startswith(("mlflow.", FINGERPRINT_TAG))},
        "machine": json.loads(tags[FINGERPRINT_TAG]),
        "mlflow": {"experiment_id": experiment_id, "run_id": run.info.run_id},
    }
    write_json(cfg.compare.details, details)
    write_predictions(cfg.compare.predictions, test.paths, test.labels, list(cfg.data.classes), answers)
    write_text(cfg.compare.leaderboard, report)
    write_json(cfg.compare.metrics, dvc_metrics(ranking, val))
    return details
