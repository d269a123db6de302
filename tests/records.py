"""What a finished training run must have recorded, checked the same way for an in-process run and for a study's."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow import MlflowClient

from catdog.common.files import sha256_file

EPOCH_METRICS = {"loss", "accuracy", "val_loss", "val_accuracy"}


def only_run(client: MlflowClient, name: str):
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], filter_string=f"attributes.run_name = '{name}'"
    )
    assert len(runs) == 1, f"expected one run named {name}, found {len(runs)}"
    return runs[0]


def artifact_paths(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def check_outputs(root: Path, name: str, epochs: int) -> dict:
    """The study-layout files of run `name` (`<variant>-<seed>`) under `root`; its metrics."""
    assert (root / "models" / name / "model.keras").is_file()
    metrics = json.loads((root / "metrics" / "train" / f"{name}.json").read_text())
    assert metrics["epochs_run"] == epochs and 0 <= metrics["best_val_accuracy"] <= 1
    history = (root / "plots" / "train" / name / "history.csv").read_text().splitlines()
    assert history[0].split(",")[0] == "epoch" and len(history) == epochs + 1
    return metrics


def check_run_record(client: MlflowClient, root: Path, variant: str, epochs: int) -> None:
    """Run `<variant>-42` finished with its params, per-epoch metrics, tags, figures, both logged models (the ones
    run's record, records/train/<variant>-42.json, names) and its two data sets, and left no checkpoint behind; the
    record holds what the run holds."""
    run = only_run(client, f"{variant}-42")
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.epochs"] == str(epochs)
    assert run.data.params["model.name"] == ("transfer" if variant == "transfer" else "cnn")
    assert int(run.data.params.get("seed")) == 42
    for key in EPOCH_METRICS:
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == list(range(epochs))
    tags = run.data.tags
    assert tags["variant"] == variant and tags["seed"] == "42"
    assert len(tags["data_version"]) == 16
    assert {"git_commit", "git_dirty"} <= set(tags)
    assert tags["did_not_learn"] in ("true", "false")  # every run says whether it learned (catdog.train.dead_runs)
    artifacts = artifact_paths(client, run.info.run_id)
    assert "figures/learning_curves.png" in artifacts
    assert ("figures/augmentation_preview.png" in artifacts) == (variant != "baseline")
    assert "config/resolved.yaml" in artifacts
    logged = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")
    record = json.loads((root / "records" / "train" / f"{variant}-42.json").read_text())
    pointers = record["mlflow"]
    assert {f"models:/{m.model_id}" for m in logged} == {pointers["model_uri"], pointers["classifier_uri"]}
    assert (pointers["run_id"], pointers["experiment_id"]) == (run.info.run_id, run.info.experiment_id)
    assert record["params"] == run.data.params and record["run"] == run.info.run_name
    machine = json.loads(tags["machine_fingerprint"])  # the run's machine in full, lifted out of the tags
    assert record["tags"] == {
        k: v for k, v in tags.items() if not k.startswith("mlflow.") and k != "machine_fingerprint"
    }
    assert record["machine"] == machine and tags["machine_id"] == machine["id"]
    # The oneDNN decision made before TensorFlow started, as the fingerprint sees it.
    assert tags["onednn"] == ("on" if machine["onednn"]["on"] else "off") and tags["onednn_decision"]
    assert 0 < record["seconds"] <= (run.info.end_time - run.info.start_time) / 1000 + 1
    inputs = {(d.dataset.name, d.tags[0].value) for d in run.inputs.dataset_inputs}
    assert inputs == {("train", "training"), ("val", "validation")}
    digests = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    assert digests["val"] == sha256_file(root / "data" / "split" / "val.csv")[:16]
    assert not any((root / "checkpoints").rglob("state.json")), "a finished run left its checkpoint"
