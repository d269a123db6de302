"""trainer.precision=auto by measurement: the step timing on a tiny model, the decision and its margin, the cache
(hit, miss, key), and the run's tag and metrics. The timings themselves are benchmarks (bench/profile.py)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import keras
import pytest
from conftest import REPO, tiny_config
from mlflow import MlflowClient

from catdog.train import autoprecision
from catdog.train.precision import policy

FAST = {"float32": 0.02, "bfloat16": 0.01}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty decision cache of this test's own."""
    monkeypatch.setenv(autoprecision.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / autoprecision.CACHE_NAME


@pytest.fixture
def measured(monkeypatch: pytest.MonkeyPatch) -> list:
    """Replace the measurement with FAST; the list records each call's config."""
    calls: list = []

    def fake(cfg, *args, **kwargs):
        calls.append(cfg)
        return dict(FAST)

    monkeypatch.setattr(autoprecision, "measure", fake)
    return calls


@pytest.mark.slow
def test_a_step_of_a_tiny_model_is_timed_after_its_first_steps() -> None:
    cfg = tiny_config("augmented")
    model = autoprecision.probe_model(cfg, "float32")
    seconds = autoprecision.seconds_per_step(model, autoprecision.probe_batches(cfg), budget_s=0.05)
    assert 0 < seconds < 5
    assert model.optimizer.iterations.numpy() >= autoprecision.UNTIMED_STEPS + 1  # stopped once the budget was spent


@pytest.mark.slow
def test_measuring_leaves_the_policy_as_it_was_though_clearing_the_session_resets_it() -> None:
    with policy("bfloat16"):
        seconds = autoprecision.measure(tiny_config("baseline"), rounds=1, budget_s=0.01)
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert set(seconds) == {"float32", "bfloat16"} and all(0 < s < 5 for s in seconds.values())
    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.parametrize(
    ("float32", "bfloat16", "chosen"),
    [(0.10, 0.05, "bfloat16"), (0.10, 0.096, "float32"), (0.10, 0.15, "float32"), (0.10, 0.10, "float32")],
)
def test_bfloat16_is_chosen_only_when_clearly_faster(float32, bfloat16, chosen) -> None:
    assert autoprecision.faster({"float32": float32, "bfloat16": bfloat16}) == chosen


def test_the_first_choice_measures_and_caches_the_next_reads_the_cache(cache: Path, measured: list) -> None:
    cfg = tiny_config("baseline")
    first = autoprecision.choose(cfg)
    assert (first.precision, first.source, first.seconds_per_step) == ("bfloat16", "measured", FAST)
    stored = json.loads(cache.read_text())[autoprecision.cache_key(cfg)]
    assert stored["precision"] == "bfloat16" and stored["tensorflow"] and stored["model"] == "cnn"
    again = autoprecision.choose(cfg)
    assert (again.precision, again.source, again.seconds_per_step) == ("bfloat16", "cached", FAST)
    assert len(measured) == 1
    assert again.metrics() == {
        "precision_probe_float32_ms_per_step": 20.0,
        "precision_probe_bfloat16_ms_per_step": 10.0,
    }


def test_each_model_has_its_own_entry_and_an_unreadable_cache_is_measured_again(cache: Path, measured) -> None:
    autoprecision.choose(tiny_config("baseline"))
    autoprecision.choose(tiny_config("transfer"))
    assert len(json.loads(cache.read_text())) == 2
    cache.write_text("{not json")
    assert autoprecision.choose(tiny_config("baseline")).source == "measured"
    assert len(measured) == 3


def test_the_key_names_the_bfloat16_flags_as_the_model_name_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config("baseline")
    monkeypatch.setattr(autoprecision, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    with_bf16 = autoprecision.cache_key(cfg)
    assert "avx512_bf16" in autoprecision.machine_key()["cpu"]
    monkeypatch.setattr(autoprecision, "cpu_flags", lambda: {"avx512f"})
    assert autoprecision.cache_key(cfg) != with_bf16
    assert autoprecision.cache_key(cfg) != autoprecision.cache_key(tiny_config("baseline", "trainer.image_size=64"))
    assert autoprecision.cache_key(cfg) == autoprecision.cache_key(tiny_config("baseline", "seed=7"))


@pytest.mark.slow
def test_an_auto_run_is_tagged_with_its_decision_and_logs_both_timings(split_data: Path, cache, measured) -> None:
    from catdog.train.run import train

    train(tiny_config("baseline", "trainer.precision=auto"))
    (run,) = MlflowClient().search_runs([e.experiment_id for e in MlflowClient().search_experiments()])
    assert run.data.tags["precision"] == "bfloat16"
    assert run.data.tags["precision_auto"] == "measured"
    assert run.data.metrics["precision_probe_float32_ms_per_step"] == 20.0
    assert run.data.metrics["precision_probe_bfloat16_ms_per_step"] == 10.0
    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.slow
def test_a_real_probe_leaves_no_trace_in_the_run(split_data: Path, cache, monkeypatch) -> None:
    """Measured for real and decided float32, an auto run ends with the float32 run's numbers to the bit."""
    from catdog.train.run import train

    monkeypatch.setattr(autoprecision, "faster", lambda seconds: "float32")
    auto = train(tiny_config("augmented", "trainer.precision=auto", "name=auto"))
    plain = train(tiny_config("augmented", "name=plain"))
    assert auto["val_loss"] == plain["val_loss"] and not math.isnan(auto["val_loss"])
    history = [(split_data / "plots" / "train" / f"{n}-42" / "history.csv").read_text() for n in ("auto", "plain")]
    assert history[0] == history[1]


def test_the_benchmark_names_the_machine_and_what_auto_chose_and_how(cache: Path, measured: list) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    import auto_precision

    first, again = auto_precision.decide("baseline"), auto_precision.decide("baseline")
    assert first.startswith("| baseline | bfloat16 | measured | 0.020 | 0.010 | 0.50 | ")
    assert again.startswith("| baseline | bfloat16 | cached | 0.020 | 0.010 | 0.50 | ") and len(measured) == 1
