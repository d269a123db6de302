"""The champion in the registry: the champion's best-validation run registered as its training logged it where this
store holds that model, else its classifier logged afresh from the study's model file into the compare run (a
pulled study, another clone's store); either way tagged with how it was chosen and the training run it came from."""

from __future__ import annotations

import keras
from omegaconf import DictConfig

from catdog.compare.leaderboard import chosen_by
from catdog.serve.classifier import log_classifier
from catdog.settings.params import study_run
from catdog.settings.run_files import Outputs
from catdog.tracking.records import commit_of, logged_model_in_store, read_record
from catdog.tracking.registry import register

CHAMPION_ARTIFACT = "champion"


def training_record(cfg: DictConfig, variant: str, seed: int) -> dict:
    return read_record(Outputs.study(cfg.trainer, variant, seed).record, f"train@{study_run(variant, seed)}")


def champion_model_uri(cfg: DictConfig, variant: str, seed: int, record: dict) -> tuple[str, bool]:
    """The classifier to register, and whether it is the one the training run logged: else this store does not
    hold it, and it is logged now, into the active (compare) run, from the model file DVC tracks."""
    logged = record["mlflow"]["classifier_uri"]
    if logged_model_in_store(logged):
        return logged, True
    path = Outputs.study(cfg.trainer, variant, seed).model
    model = keras.models.load_model(path, compile=False)
    classifier = log_classifier(
        model, list(cfg.data.classes), name=CHAMPION_ARTIFACT, max_pixels=cfg.data.max_pixels, saved=path
    )
    return classifier.model_uri, False


def register_champion(cfg: DictConfig, name: str, row: dict, val: dict) -> tuple[str, str]:
    """Register the model of the champion's best-validation seed, with how it was chosen, its scores and its
    training run (id and commit, from the run's record) as tags; return (version, alias)."""
    record = training_record(cfg, name, val["seed"])
    uri, as_trained = champion_model_uri(cfg, name, val["seed"], record)
    tags = {
        "variant": name,
        "seed": str(val["seed"]),
        "chosen_by": chosen_by(len(val["per_seed"])),
        "val_accuracy": f"{val['best_val_accuracy']:.4f}",
        "test_accuracy": f"{row['accuracy']:.4f}",
        "training_run_id": record["mlflow"]["run_id"],
        "training_commit": commit_of(record["tags"]),
        "logged_by": "train" if as_trained else "compare (the training run is in another store)",
    }
    return register(cfg.tracking, uri, tags)
