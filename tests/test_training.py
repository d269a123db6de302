"""Training runs on tiny images: the MLflow record, reproducibility, resume after SIGKILL, NaN. The four variants' records and their logged models are checked on the tiny study (tests/test_pipeline.py)."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import hostile
import keras
import numpy as np
import pytest
import records
from conftest import REPO, WEIGHTS_SIZE, expected_overrides, tiny_config
from mlflow import MlflowClient

from catdog.data import images
from catdog.data.dataset import EpochClock, Split, UnreadableImage, batches, load_split
from catdog.data.manifests import data_version, read_manifest
from catdog.train import fit as phases
from catdog.train import run as training
from catdog.train import run_log
from catdog.train.checkpoints import Checkpoints
from catdog.train.models import build_model
from catdog.train.run import TrainingDiverged, train


def only_run(name: str):
    return records.only_run(MlflowClient(), name)


def test_a_one_epoch_training_records_a_complete_run(split_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The fast tier's smoke test of a whole training in this process; every variant's record is checked on the
    tiny study's runs (tests/test_pipeline.py). The run describes itself in the UI, and the console says where it is:
    the command that serves the local store's UI and the run's page in the model-training view."""
    metrics = train(tiny_config("baseline"))
    assert records.check_outputs(split_data, "baseline-42", epochs=1) == pytest.approx(metrics)
    records.check_run_record(MlflowClient(), split_data, "baseline", epochs=1)
    run = only_run("baseline-42")
    best = f"{metrics['best_val_accuracy']:.1%}"
    assert run.data.tags["mlflow.note.content"] == f"baseline: best val accuracy {best} at epoch 1 of 1"
    page = f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    printed = capsys.readouterr().out
    serve = f"uv run mlflow ui --backend-store-uri {os.environ['MLFLOW_TRACKING_URI']} --host 127.0.0.1 --port 5000"
    assert f"baseline: MLflow run at {page}?workflowType=machine_learning once `{serve}` serves the UI\n" in printed


def test_a_tracking_server_run_is_printed_as_its_page_in_the_training_view() -> None:
    assert (
        run_log.where_to_look("http://mlflow.team:5000/", "3", "abc")
        == "http://mlflow.team:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    )


@pytest.mark.slow
def test_same_seed_gives_bit_identical_runs_whatever_the_steps_per_execution(split_data: Path) -> None:
    """The same seed twice: the same history and weights, also when the second groups 2 steps per call (24 train
    images in batches of 8: 3 steps an epoch, so a short last call); another seed: another history."""
    knobs = ("trainer.epochs=2", "trainer.ema_momentum=0.5")  # dropout, augmentation and weight averaging
    first = train(tiny_config("augmented", *knobs, "trainer.steps_per_execution=1", "name=one"))
    second = train(tiny_config("augmented", *knobs, "trainer.steps_per_execution=2", "name=two"))
    other = train(tiny_config("augmented", *knobs, "name=other", "seed=7"))
    history = [
        (split_data / "plots" / "train" / n / "history.csv").read_text() for n in ("one-42", "two-42", "other-7")
    ]
    assert history[0] == history[1] and first["val_loss"] == second["val_loss"]
    assert history[0] != history[2] or other["val_loss"] != first["val_loss"]
    models = [keras.models.load_model(split_data / "models" / f"{n}-42" / "model.keras") for n in ("one", "two")]
    assert [m.steps_per_execution for m in models] == [1, 2]
    for one, two in zip(*(m.get_weights() for m in models), strict=True):
        np.testing.assert_array_equal(one, two)


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_learning_rate_schedule_runs_over_the_configured_epochs(split_data: Path, schedule: str) -> None:
    cfg = tiny_config(
        "baseline", "trainer.epochs=3", "trainer.early_stopping.enabled=false", f"trainer.lr_schedule={schedule}"
    )
    train(cfg)
    optimizer = keras.models.load_model(split_data / "models" / "baseline-42" / "model.keras").optimizer
    steps = 3 * math.ceil(len(read_manifest(split_data / "data/split/train.csv")) / cfg.trainer.batch_size)
    assert int(optimizer.iterations) == steps
    final_rate = float(optimizer.learning_rate)
    assert final_rate == pytest.approx(cfg.optimizer.learning_rate if schedule == "constant" else 0.0, abs=1e-9)


@pytest.mark.slow
def test_weight_averaging_validates_and_saves_the_averaged_weights(split_data: Path) -> None:
    # A momentum this close to 1 keeps the average at the initial weights, so validation must not learn.
    cfg = tiny_config(
        "baseline", "trainer.epochs=3", "trainer.early_stopping.enabled=false", "trainer.ema_momentum=0.999999"
    )
    train(cfg)
    with open(split_data / "plots" / "train" / "baseline-42" / "history.csv", newline="") as handle:
        val_loss = [float(row["val_loss"]) for row in csv.DictReader(handle)]
    assert max(val_loss) - min(val_loss) < 1e-3
    saved = keras.models.load_model(split_data / "models" / "baseline-42" / "model.keras")
    keras.utils.set_random_seed(cfg.seed)
    fresh = build_model(cfg, num_classes=2)
    first_step = cfg.optimizer.learning_rate * 1.001  # Keras starts the average at the weights after one Adam step
    for ours, initial in zip(saved.get_layer("net").get_weights(), fresh.get_layer("net").get_weights(), strict=True):
        np.testing.assert_allclose(ours, initial, atol=first_step)


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ("baseline",),
        # The head fits alone on cached features, under the model's own optimizer.
        ("transfer", "augment=off", "model.cache_features=true"),
    ],
    ids=["whole-model", "head-on-cached-features"],
)
def test_a_resumed_averaging_run_trains_on_from_its_trained_weights_and_optimizer_state(
    split_data: Path, monkeypatch: pytest.MonkeyPatch, overrides: tuple[str, ...]
) -> None:
    cfg = tiny_config(*overrides, "trainer.epochs=3", "trainer.ema_momentum=0.5")

    def interrupt(run_id: str, history: dict) -> None:
        raise KeyboardInterrupt("stopped after the first checkpoint")

    monkeypatch.setattr(phases, "log_pending_epochs", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    checkpoints = Checkpoints(Path(cfg.trainer.checkpoint_dir))
    state = checkpoints.load(training.fingerprint(cfg, data_version(split_data / "data" / "split")))
    averaged = keras.models.load_model(checkpoints.path(state.model_file)).get_weights()
    model = phases.prepare_model(cfg, state, checkpoints, steps=1)
    assert int(model.optimizer.iterations) == phases.steps_per_epoch(cfg, training.load_data(cfg))
    assert not all(np.array_equal(a, b) for a, b in zip(model.get_weights(), averaged, strict=True))
    model.optimizer.finalize_variable_values(model.trainable_variables)
    for ours, saved in zip(model.get_weights(), averaged, strict=True):
        np.testing.assert_array_equal(ours, saved)


def test_each_epochs_order_depends_on_the_seed_and_epoch_only() -> None:
    split = Split(np.zeros((20, 1, 1, 3), "uint8"), np.arange(20, dtype="int32"), ())
    clock = EpochClock()
    ds = batches(split, 8, shuffle=True, seed=3, epoch=clock.epoch)

    def order(epoch: int) -> list[int]:
        clock.on_epoch_begin(epoch)
        return [int(i) for _, labels in ds for i in labels]

    first = [order(e) for e in (0, 1, 2)]
    assert [order(e) for e in (2, 1, 0)] == first[::-1], "a pass must depend on the epoch, not on passes before it"
    assert all(sorted(o) == list(range(20)) for o in first) and len({tuple(o) for o in first}) == 3
    assert order(1) == [int(i) for _, labels in batches(split, 8, shuffle=True, seed=3, epoch=1) for i in labels]
    assert order(1) != [int(i) for _, labels in batches(split, 8, shuffle=True, seed=4, epoch=1) for i in labels]


def outputs_of(workdir: Path, name: str) -> tuple[str, list[np.ndarray]]:
    """A finished run's history.csv and the weights of its saved model."""
    model = keras.models.load_model(workdir / "models" / f"{name}-42" / "model.keras")
    return (workdir / "plots" / "train" / f"{name}-42" / "history.csv").read_text(), model.get_weights()


@pytest.mark.slow
def test_a_run_resumed_after_any_epoch_ends_as_if_never_stopped(
    split_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after its first epoch, and another after its second: each ends with the uninterrupted run's history and
    weights (the run's name changes nothing it trains), in the one MLflow run it started."""
    # Dropout, augmentation and weight averaging: every random stream and the optimizer state must carry over.
    overrides = ("trainer.epochs=4", "trainer.early_stopping.enabled=false")
    train(tiny_config("augmented", *overrides, "name=whole"))  # finished, it leaves no checkpoint
    expected_history, expected_weights = outputs_of(split_data, "whole")
    log_pending_epochs = phases.log_pending_epochs
    for killed_after in (1, 2):
        cfg = tiny_config("augmented", *overrides, f"name=cut-{killed_after}")

        def stop_after_checkpoint(run_id: str, history: dict, killed_after: int = killed_after) -> None:
            """Stands in for a SIGKILL once epoch `killed_after` is checkpointed and reported."""
            log_pending_epochs(run_id, history)
            if len(history["loss"]) == killed_after:
                raise KeyboardInterrupt(f"killed after epoch {killed_after}")

        with monkeypatch.context() as patch:
            patch.setattr(phases, "log_pending_epochs", stop_after_checkpoint)
            with pytest.raises(KeyboardInterrupt):
                train(cfg)
        checkpointed = json.loads((Path(cfg.trainer.checkpoint_dir) / "state.json").read_text())
        assert len(checkpointed["history"]["loss"]) == killed_after
        train(cfg)
        runs = MlflowClient().search_runs(
            [e.experiment_id for e in MlflowClient().search_experiments()],
            filter_string=f"attributes.run_name = '{cfg.name}-{cfg.seed}'",
        )
        assert [r.info.status for r in runs] == ["FINISHED"], "the restart must continue the interrupted run"
        history, weights = outputs_of(split_data, cfg.name)
        assert history == expected_history, f"killed after epoch {killed_after}"
        for ours, theirs in zip(weights, expected_weights, strict=True):
            np.testing.assert_array_equal(ours, theirs)


def val_split_args(root: Path) -> tuple[Path, tuple]:
    """The decode cache's folder, and `load_split`'s arguments for the tiny val split at 32 px."""
    cache = root / "data" / "cache"
    return cache, (root / "data/split/val.csv", root / "data/raw/cats_and_dogs_filtered", ["cats", "dogs"], 32, cache)


def test_cache_is_keyed_by_the_manifest(split_data: Path) -> None:
    cache, args = val_split_args(split_data)
    first = load_split(*args)
    assert len(list(cache.glob("val-*-32px.npz"))) == 1
    manifest = args[0]
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(lines[:-1]) + "\n")
    second = load_split(*args)
    assert len(second.labels) == len(first.labels) - 1
    assert len(list(cache.glob("val-*-32px.npz"))) == 2
    ds = batches(second, 4, shuffle=True, seed=0)
    images, labels = next(iter(ds))
    assert images.dtype == "float32" and images.shape[1:] == (32, 32, 3) and labels.shape == (4,)


def test_cache_is_keyed_by_the_decode_recipe(split_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A change to how images are decoded, with its new `DECODE_VERSION`, is a cache miss: the split is decoded again
    with the new recipe, where the old cache would have served the old pixels."""
    cache, args = val_split_args(split_data)
    first = load_split(*args)
    decode = images.decode_tensor
    monkeypatch.setattr(images, "decode_tensor", lambda *a: 255 - decode(*a))  # another recipe: the negative
    try:
        images._graph.cache_clear()
        np.testing.assert_array_equal(load_split(*args).images, first.images)  # the same version: the cache
        monkeypatch.setattr(images, "DECODE_VERSION", images.DECODE_VERSION + 1)
        np.testing.assert_array_equal(load_split(*args).images, 255 - first.images)
        assert len(list(cache.glob("val-*.npz"))) == 2
        np.testing.assert_array_equal(load_split(*args).images, 255 - first.images)  # now cached too
        assert len(list(cache.glob("val-*.npz"))) == 2
    finally:
        images._graph.cache_clear()  # traced with the negative: trace the real recipe again next time


def test_an_image_over_the_pixel_limit_fails_the_decode_naming_the_file(split_data: Path) -> None:
    dataset = split_data / "data/raw/cats_and_dogs_filtered"
    victim = dataset / read_manifest(split_data / "data/split/val.csv")[3].path
    victim.write_bytes(hostile.encode(hostile.picture(0, 50, 30), "PNG"))  # the others are 40 x 30
    args = (split_data / "data/split/val.csv", dataset, ["cats", "dogs"], 32, split_data / "data" / "cache")
    with pytest.raises(UnreadableImage, match=f"^{re.escape(str(victim))}: PNG of 50 x 30 px .*max_pixels=1200"):
        load_split(*args, max_pixels=1200)
    assert not (split_data / "data" / "cache").exists()
    assert load_split(*args).images.shape[1:] == (32, 32, 3)  # the default, 40 megapixels


@pytest.mark.slow
def test_nan_loss_fails_the_run_and_writes_no_model(split_data: Path) -> None:
    """A diverged run fails in one message naming the run and the rate to lower (a `UserError`: the entry points
    print it as `training error: …`, test_errors.py), its MLflow run FAILED, and nothing of a model written."""
    cfg = tiny_config("baseline", "optimizer=sgd", "optimizer.learning_rate=1e38", "trainer.epochs=3")
    with pytest.raises(TrainingDiverged) as diverged:
        train(cfg)
    assert str(diverged.value) == (
        "run 'baseline': the loss became non-finite in epoch 1 with optimizer.learning_rate=1e+38; "
        "lower it (e.g. `optimizer.learning_rate=1e+37`) and run the command again"
    )
    run = only_run("baseline-42")
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"].startswith("TrainingDiverged")
    assert not (split_data / "models" / "baseline-42").exists()
    assert not (split_data / "metrics" / "train" / "baseline-42.json").exists()
    assert MlflowClient().search_registered_models() == []


def train_command(*overrides: str) -> list[str]:
    return [sys.executable, str(REPO / "src" / "train.py"), *expected_overrides(), *overrides]


@pytest.mark.slow
def test_sigkill_mid_training_then_restart_resumes_the_same_run(split_data: Path, isolated_mlflow: str) -> None:
    overrides = [
        "variant=baseline",
        "trainer.image_size=64",
        "trainer.batch_size=1",
        "trainer.epochs=4",
        "trainer.early_stopping.enabled=false",
        "trainer.outputs=study",
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": isolated_mlflow}
    proc = subprocess.Popen(
        train_command(*overrides), cwd=split_data, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    state = split_data / "checkpoints" / "study" / "baseline" / "seed-42" / "state.json"
    deadline = time.monotonic() + 240
    while not (state.is_file() and len(json.loads(state.read_text())["history"]["loss"]) >= 1):
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    checkpointed = json.loads(state.read_text())
    assert len(checkpointed["history"]["loss"]) < 4, "the run finished before it was killed; make the epochs longer"
    assert checkpointed["seconds"] > 0
    earlier = 10_000.0  # stands in for a long first attempt, so the sum below cannot pass by chance
    state.write_text(json.dumps({**checkpointed, "seconds": earlier}))

    done = subprocess.run(
        train_command(*overrides), cwd=split_data, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming run" in done.stdout + done.stderr
    run = only_run("baseline-42")
    assert run.info.status == "FINISHED"
    for key in records.EPOCH_METRICS:
        assert [m.step for m in MlflowClient().get_metric_history(run.info.run_id, key)] == [0, 1, 2, 3]
    metrics = json.loads((split_data / "metrics" / "train" / "baseline-42.json").read_text())
    assert metrics["epochs_run"] == 4
    assert earlier < metrics["seconds"] < earlier + 300, "the time before the kill is lost"
    assert not state.exists()


@pytest.mark.slow
@pytest.mark.requires("imagenet")
def test_transfer_trains_with_the_real_imagenet_weights(split_data: Path, isolated_mlflow) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": isolated_mlflow}
    cmd = train_command(
        "variant=transfer", f"trainer.image_size={WEIGHTS_SIZE}", "trainer.epochs=1", "trainer.batch_size=8"
    )
    done = subprocess.run(cmd, cwd=split_data, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run = only_run("transfer")  # an ad-hoc run: named by its variant alone
    assert run.data.params["model.net.weights"] == "imagenet"
    assert run.data.metrics["final_params_trainable"] == 377_986
    assert run.data.metrics["final_best_val_accuracy"] >= 0.75


@pytest.mark.slow
def test_cached_features_train_the_head_of_the_full_model(split_data: Path) -> None:
    cfg = tiny_config(
        "transfer",
        "augment=off",
        "model.cache_features=true",
        "trainer.epochs=2",
        "trainer.early_stopping.enabled=false",
    )
    metrics = train(cfg)
    assert metrics["epochs_run"] == 2
    saved = keras.models.load_model(split_data / "models" / "transfer-42" / "model.keras")
    val = load_split(
        split_data / "data/split/val.csv",
        split_data / "data/raw/cats_and_dogs_filtered",
        ["cats", "dogs"],
        cfg.trainer.image_size,
        split_data / "data/cache",
    )
    saved.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    _, accuracy = saved.evaluate(batches(val, 8, shuffle=False, seed=0), verbose=0)
    assert accuracy == pytest.approx(metrics["val_accuracy"], abs=1e-6)
