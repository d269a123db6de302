"""The comparison stage: the champion is chosen on val, never test; missing or corrupt models fail clearly."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from conftest import TINY_SIZE, tiny_config
from mlflow import MlflowClient

from catdog.common.machine import fingerprint, words
from catdog.compare.machines import machines_note
from catdog.compare.over_seeds import best_on_validation
from catdog.compare.stage import ModelLoadError, compare
from catdog.data.manifests import read_manifest
from catdog.report.sections import compared_machines
from catdog.serve.classifier import log_classifier
from catdog.settings.run_files import Outputs
from catdog.tracking.provenance import FINGERPRINT_TAG
from catdog.tracking.records import write_record
from catdog.tracking.registry import log_model
from catdog.train.outputs import summary


def assert_nothing_written(root: Path) -> None:
    assert not (root / "reports").exists()
    assert not (root / "metrics" / "compare.json").exists()
    assert not (root / "plots" / "compare").exists()
    client = MlflowClient()
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_a_missing_model_names_the_run_and_path(split_data: Path) -> None:
    with pytest.raises(
        ModelLoadError,
        match=r"run 'baseline-42': model file models/baseline-42/model.keras not found; "
        r"run `dvc repro train@baseline-42`",
    ):
        compare(tiny_config("baseline"))
    assert_nothing_written(split_data)


def test_a_corrupt_model_names_the_run_and_path(split_data: Path) -> None:
    model = split_data / "models" / "baseline-42" / "model.keras"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"PK\x03\x04 this is not a keras archive")
    metrics = split_data / "metrics" / "train" / "baseline-42.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"best_val_accuracy": 0.5, "best_val_loss": 0.7, "best_epoch": 1}))
    with pytest.raises(ModelLoadError, match=r"run 'baseline-42': model file .*model.keras could not be loaded"):
        compare(tiny_config("baseline", "study.variants=[baseline]"))
    assert_nothing_written(split_data)


def colour_classifier(size: int, sign: float) -> keras.Model:
    """A fixed model that calls an image a cat when it is redder than blue (sign 1): right on every tiny test
    image, or wrong on every one (sign -1)."""
    inputs = keras.Input((size, size, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    logits = keras.layers.Dense(2, name="logits")(pooled)
    model = keras.Model(inputs, logits)
    model.get_layer("logits").set_weights([sign * np.array([[1.0, -1.0], [0.0, 0.0], [-1.0, 1.0]]), np.zeros(2)])
    return model


EMERALD_RAPIDS = Path(__file__).parent / "data" / "cpuinfo" / "intel-xeon-6-207-2-emerald-rapids.txt"


def plant_variant(
    root: Path,
    cfg,
    variant: str,
    model: keras.Model,
    best_val_accuracy: float,
    seed: int = 42,
    logged: bool = True,
    machine: dict | None = None,
) -> None:
    """A run's study outputs as its train stage leaves them: the model, its metrics, its history and (`logged`) its
    MLflow run with the logged models (compare reads only the champion's) and the `machine` it trained on (this
    one, two threads, float32, unless given)."""
    outputs = Outputs.study(cfg.trainer, variant, seed)
    outputs.model.parent.mkdir(parents=True, exist_ok=True)
    model.save(outputs.model)
    metrics = {"best_val_accuracy": best_val_accuracy, "best_val_loss": 0.5, "best_epoch": 3}
    outputs.metrics.parent.mkdir(parents=True, exist_ok=True)
    outputs.metrics.write_text(json.dumps(metrics))
    outputs.history.parent.mkdir(parents=True, exist_ok=True)
    outputs.history.write_text(f"epoch,val_accuracy\n1,{best_val_accuracy}\n")
    if not logged:
        return
    machine = machine or fingerprint(2, "float32")
    with mlflow.start_run(run_name=f"{variant}-{seed}") as run:
        mlflow.set_tags({"machine": words(machine), "machine_id": machine["id"], FINGERPRINT_TAG: json.dumps(machine)})
        uri = log_model(model, np.zeros((1, *model.input_shape[1:]), dtype="float32"))
        classifier = log_classifier(model, list(cfg.data.classes)).model_uri
    outputs.record.parent.mkdir(parents=True, exist_ok=True)
    write_record(outputs.record, run.info.run_id, {"model_uri": uri, "classifier_uri": classifier})


def test_a_runs_best_val_loss_is_its_best_epochs_and_breaks_a_tie_between_seeds() -> None:
    """The run's model is its best val accuracy epoch's weights: its val loss is that epoch's, not the lowest of
    any epoch. Seed 1's lowest val loss (0.30, epoch 3) is not its model's; at their best epochs seed 2's is lower."""
    histories = {
        1: {"val_accuracy": [0.60, 0.75, 0.70], "val_loss": [0.65, 0.60, 0.30]},
        2: {"val_accuracy": [0.60, 0.70, 0.75], "val_loss": [0.65, 0.50, 0.40]},
    }
    val = {seed: summary(h, seconds=1.0, counts={}) for seed, h in histories.items()}
    assert (val[1]["best_epoch"], val[1]["best_val_accuracy"], val[1]["best_val_loss"]) == (2, 0.75, 0.60)
    assert (val[2]["best_epoch"], val[2]["best_val_accuracy"], val[2]["best_val_loss"]) == (3, 0.75, 0.40)
    assert best_on_validation(val) == 2


@pytest.mark.slow
def test_the_champion_is_the_validation_pick_even_where_test_ranks_another_first(split_data: Path) -> None:
    cfg = tiny_config("baseline")
    # baseline is right on every test image but was worse on val; augmented is wrong on every one but led on val.
    val = {"baseline": 0.60, "augmented": 0.90, "scaled": 0.70, "transfer": 0.65}
    for variant, accuracy in val.items():
        sign = 1.0 if variant == "baseline" else -1.0
        plant_variant(split_data, cfg, variant, colour_classifier(TINY_SIZE, sign), accuracy)
    details = compare(cfg)
    assert details["models"]["baseline"]["accuracy"] == 1.0 and details["models"]["augmented"]["accuracy"] == 0.0
    assert details["champion"] == "augmented"
    # Not a committed state (no git here): the pick is a challenger, and no champion alias is set.
    client = MlflowClient()
    assert set(client.get_registered_model("catdog").aliases) == {"challenger"}
    version = client.get_model_version_by_alias("catdog", "challenger")
    trained = json.loads(Outputs.study(cfg.trainer, "augmented", 42).record.read_text())["mlflow"]
    assert (version.run_id, version.source) == (trained["run_id"], trained["classifier_uri"])
    assert (version.tags["training_run_id"], version.tags["logged_by"]) == (trained["run_id"], "train")
    assert version.tags["variant"] == "augmented"
    assert version.tags["chosen_by"].startswith("best validation accuracy")
    assert float(version.tags["val_accuracy"]) == 0.90
    board = (split_data / "reports" / "leaderboard.md").read_text()
    assert "Champion: **augmented**" in board
    assert "The validation pick is not the test leader: baseline scored 100.0% on test" in board
    rows = [line for line in board.splitlines() if line.startswith("| 1 |")]
    assert rows and "| baseline |" in rows[0] and "| 60.0% |" in rows[0]
    # One seed: the one-seed leaderboard, no columns over seeds.
    assert "| rank | model | accuracy | 95% CI | loss | val accuracy | cats P / R / F1 | dogs P / R / F1 |\n" in board
    assert "95% Wilson interval" in board and "mean of" not in board
    here = fingerprint(2, "float32")
    assert f"Every run trained on one machine, fingerprint `{here['id']}`: {words(here)}." in board


def test_the_leaderboard_names_the_machine_or_flags_runs_from_two() -> None:
    one, other = {"id": "aaaa", "words": "CPU A"}, {"id": "bbbb", "words": "CPU B"}
    assert machines_note({"baseline-42": one, "scaled-42": one}) == [
        "Every run trained on one machine, fingerprint `aaaa`: CPU A."
    ]
    (line,) = machines_note({"baseline-42": one, "baseline-1": other, "scaled-42": one})
    assert line.startswith("The runs trained on 2 machine fingerprints, so their numbers are draws from different ")
    assert line.endswith("`aaaa` (CPU A): baseline-42, scaled-42; `bbbb` (CPU B): baseline-1.")


@pytest.mark.slow
def test_compare_and_the_report_flag_a_study_whose_runs_carry_two_fingerprints(split_data: Path) -> None:
    cfg = tiny_config("baseline")
    xeon = fingerprint(2, "float32", cpuinfo=EMERALD_RAPIDS, environ={})
    for variant, accuracy in {"baseline": 0.6, "augmented": 0.7, "scaled": 0.8, "transfer": 0.9}.items():
        machine = xeon if variant == "transfer" else None
        plant_variant(split_data, cfg, variant, colour_classifier(TINY_SIZE, 1.0), accuracy, machine=machine)
    details = compare(cfg)
    here = fingerprint(2, "float32")
    assert here["id"] != xeon["id"]
    assert details["runs"]["transfer-42"]["machine_id"] == xeon["id"]
    assert details["runs"]["baseline-42"]["machine_id"] == here["id"]
    assert details["machines"] == {here["id"]: words(here), xeon["id"]: words(xeon)}
    board = (split_data / "reports" / "leaderboard.md").read_text()
    flagged = f"`{xeon['id']}` ({words(xeon)}): transfer-42."
    assert "The runs trained on 2 machine fingerprints" in board and flagged in board
    assert compared_machines(details) == machines_note(
        {r: {"id": v["machine_id"], "words": details["machines"][v["machine_id"]]} for r, v in details["runs"].items()}
    )
    assert details["provenance"]["machine"]["id"] == fingerprint()["id"]  # the compare stage's own


@pytest.mark.slow
def test_over_seeds_the_champion_has_the_best_mean_val_and_the_board_shows_each_seed(split_data: Path) -> None:
    cfg = tiny_config("baseline", "study.seeds=[1,2,3]")
    # augmented holds the single best val run (0.95) but the lower mean; scaled the best mean, best at seed 2.
    val = {
        "baseline": [0.6, 0.6, 0.6],
        "augmented": [0.95, 0.5, 0.5],
        "scaled": [0.7, 0.72, 0.68],
        "transfer": [0.6] * 3,
    }
    # On test, baseline is right on every image with seeds 1 and 2 and wrong on every one with seed 3.
    signs = {"baseline": [1.0, 1.0, -1.0], "augmented": [-1.0] * 3, "scaled": [1.0] * 3, "transfer": [-1.0] * 3}
    for variant, accuracies in val.items():
        for seed, accuracy, sign in zip((1, 2, 3), accuracies, signs[variant], strict=True):
            model = colour_classifier(TINY_SIZE, sign)
            plant_variant(split_data, cfg, variant, model, accuracy, seed=seed, logged=variant == "scaled")
    details = compare(cfg)
    assert details["champion"] == "scaled" and details["validation"]["scaled"]["seed"] == 2
    assert details["validation"]["scaled"]["best_val_accuracy"] == pytest.approx(0.70)
    baseline = details["models"]["baseline"]
    assert baseline["accuracy"] == pytest.approx(2 / 3) and baseline["sd"] == pytest.approx(np.std([1, 1, 0], ddof=1))
    assert (baseline["ci_low"], baseline["ci_high"]) == (0.0, 1.0)  # t(2) interval, clipped to [0, 1]
    assert baseline["per_seed"] == {"1": 1.0, "2": 1.0, "3": 0.0}
    assert sorted(details["runs"]) == sorted(f"{v}-{s}" for v in val for s in (1, 2, 3))
    assert details["runs"]["baseline-3"]["test_accuracy"] == 0.0
    version = MlflowClient().get_model_version_by_alias("catdog", "challenger")
    trained = json.loads(Outputs.study(cfg.trainer, "scaled", 2).record.read_text())["mlflow"]
    assert (version.run_id, version.tags["seed"]) == (trained["run_id"], "2")
    assert version.tags["chosen_by"].startswith("best mean validation accuracy over training seeds")
    board = (split_data / "reports" / "leaderboard.md").read_text()
    assert "| sd | seed 1 | seed 2 | seed 3 |" in board
    row = next(line for line in board.splitlines() if "| baseline |" in line and line.startswith("|"))
    assert "| 66.7% | 0.0% – 100.0% |" in row and row.endswith("| 57.7% | 100.0% | 100.0% | 0.0% |")
    assert "Champion: **scaled**" in board and "the registered model is its seed 2 run" in board
    metrics = json.loads((split_data / "metrics" / "compare.json").read_text())
    assert metrics["baseline"]["test_accuracy_seed_3"] == 0.0 and metrics["baseline"]["test_accuracy_sd"] > 0.5
    assert (split_data / "plots" / "compare" / "history" / "scaled.csv").read_text() == (
        Outputs.study(cfg.trainer, "scaled", 2).history.read_text()
    )
    # Every run's answer for every test image, in manifest order: what the report reads of the champion.
    with open(split_data / "reports" / "test_predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    test = read_manifest(split_data / "data" / "split" / "test.csv")
    for run in details["runs"]:
        mine = [r for r in rows if r["run"] == run]
        assert [(r["path"], r["label"]) for r in mine] == [(e.path, e.label) for e in test]
        right = sum(r["predicted"] == r["label"] for r in mine)
        assert right == round(details["runs"][run]["test_accuracy"] * len(test))
        assert all(0.5 <= float(r["probability"]) <= 1 for r in mine)
    assert len(rows) == len(details["runs"]) * len(test)


@pytest.mark.slow
def test_in_another_store_the_champion_is_logged_from_its_file_and_registered_there(
    split_data: Path, tmp_path_factory: pytest.TempPathFactory, migrated_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pulled study: its runs' records point at logged models of the store that trained it, which this store does
    not hold; compare logs the champion's classifier from models/<run>/model.keras into its own run instead."""
    cfg = tiny_config("baseline", "study.variants=[baseline]", "data.max_pixels=12345678")
    plant_variant(split_data, cfg, "baseline", colour_classifier(TINY_SIZE, 1.0), 0.8)
    trained = json.loads(Outputs.study(cfg.trainer, "baseline", 42).record.read_text())["mlflow"]
    other = tmp_path_factory.mktemp("other") / "mlflow.db"
    other.write_bytes(migrated_store.read_bytes())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{other}")
    mlflow.set_tracking_uri(f"sqlite:///{other}")
    details = compare(cfg)
    version = MlflowClient().get_model_version_by_alias("catdog", details["champion_alias"])
    assert version.run_id == details["provenance"]["mlflow"]["run_id"] != trained["run_id"]
    assert version.source != trained["classifier_uri"]
    assert version.tags["training_run_id"] == trained["run_id"] and version.tags["logged_by"].startswith("compare")
    classifier = mlflow.pyfunc.load_model(f"models:/catdog/{version.version}")
    assert classifier.metadata.get_input_schema().input_names() == ["image"]
    assert classifier.model_config["max_pixels"] == 12345678  # the study's pixel limit, not the default
