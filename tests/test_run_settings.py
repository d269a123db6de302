"""What a run says about itself is true: its precision, its split, its name and where its outputs go."""

from __future__ import annotations

import warnings
from pathlib import Path

import keras
import pytest
from conftest import CONF, all_runs, jpeg_bytes, tiny_config
from mlflow import MlflowClient

from catdog.data.manifests import data_version
from catdog.data.split import make_split
from catdog.settings.checks import ConfigError
from catdog.settings.params import compose_config
from catdog.train import checkpoints
from catdog.train.precision import EmulatedPrecisionWarning
from catdog.train.run import train


def dtype_policies(model: keras.Model) -> set[str]:
    """The dtype policies of every layer, nested models included, except the float32 logits."""
    found = set()
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found |= dtype_policies(layer)
        elif layer.name != "logits" and layer.weights:
            found.add(layer.dtype_policy.name)
    return found


@pytest.mark.slow
def test_a_bfloat16_run_computes_in_bfloat16_and_restores_the_policy(split_data: Path) -> None:
    before = keras.mixed_precision.global_policy().name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmulatedPrecisionWarning)  # a CI machine may lack native bfloat16
        train(tiny_config("baseline", "trainer.precision=bfloat16", "name=mixed"))
    assert keras.mixed_precision.global_policy().name == before == "float32"
    mixed = keras.models.load_model(split_data / "models" / "mixed-42" / "model.keras")
    assert dtype_policies(mixed) == {"mixed_bfloat16"}
    assert mixed.get_layer("net").get_layer("logits").dtype_policy.compute_dtype == "float32"
    assert all(w.dtype == "float32" for w in mixed.weights)  # bfloat16 compute, float32 variables
    train(tiny_config("baseline", "name=plain"))  # as the next job of a --multirun sweep would
    plain = keras.models.load_model(split_data / "models" / "plain-42" / "model.keras")
    assert dtype_policies(plain) == {"float32"}
    assert {r.info.run_name: r.data.tags["precision"] for r in all_runs()} == {
        "mixed-42": "bfloat16",
        "plain-42": "float32",
    }


@pytest.mark.slow
def test_the_run_logs_the_split_settings_and_the_data_version(split_data: Path) -> None:
    cfg = tiny_config("baseline")
    train(cfg)
    (run,) = all_runs()
    params = run.data.params
    assert params["data.split_seed"] == str(cfg.data.split_seed)
    assert params["data.test_fraction"] == str(cfg.data.test_fraction)
    assert params["data.version"] == data_version(split_data / "data" / "split") == run.data.tags["data_version"]


def test_a_split_drawn_with_other_settings_is_refused_before_a_run_opens(split_data: Path) -> None:
    data = compose_config(CONF).data
    make_split(
        split_data / "data" / "raw" / "cats_and_dogs_filtered",
        split_data / "data" / "split",
        ["cats", "dogs"],
        "train",
        "validation",
        data.test_fraction,
        seed=data.split_seed + 1,
        min_holdout_per_class=2,
    )
    with pytest.raises(ConfigError, match=rf"data.split_seed: this run says {data.split_seed} but .* drawn with"):
        train(tiny_config("baseline"))
    assert all_runs() == []


@pytest.mark.slow
def test_a_killed_run_never_resumes_on_a_redrawn_split(split_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config("baseline", "trainer.epochs=3", "trainer.early_stopping.enabled=false")
    original = checkpoints.EpochEnd.on_epoch_end

    def killed_after_first_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(checkpoints.EpochEnd, "on_epoch_end", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.setattr(checkpoints.EpochEnd, "on_epoch_end", original)
    (killed,) = all_runs()
    # The same settings draw another split once the data changed: one more dog in the hold-out folder.
    dataset = split_data / "data" / "raw" / "cats_and_dogs_filtered"
    (dataset / "validation" / "dogs" / "dog.extra.jpg").write_bytes(jpeg_bytes((40, 80, 210), seed=999))
    make_split(
        dataset,
        split_data / "data" / "split",
        ["cats", "dogs"],
        "train",
        "validation",
        cfg.data.test_fraction,
        seed=cfg.data.split_seed,
        min_holdout_per_class=2,
    )
    train(cfg)
    fresh = [r for r in all_runs() if r.info.run_id != killed.info.run_id]
    assert len(fresh) == 1, "the run resumed on a split it was not started on"
    history = MlflowClient().get_metric_history(fresh[0].info.run_id, "loss")
    assert [m.step for m in history] == [0, 1, 2]
