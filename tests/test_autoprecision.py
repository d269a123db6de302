"""trainer.precision=auto by measurement: the step timing on a tiny model, the decision and its margin, the cache
(hit, miss, and its key: the machine fingerprint with oneDNN's state and the thread count, and the workload), and the
run's tag and metrics. The timings themselves are benchmarks (bench/auto_precision.py)."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import keras
import pytest
from conftest import REPO, tiny_config
from mlflow import MlflowClient

from catdog.common.machine import ONEDNN_ENV
from catdog.train import autoprecision, probe
from catdog.train.precision import policy

FAST = {"float32": 0.02, "bfloat16": 0.01}
SAMPLES = Path(__file__).parent / "data" / "cpuinfo"
KINDS = {
    "zen3": "amd-epyc-25-1-1-milan.txt",
    "ice-lake": "intel-xeon-6-106-6-ice-lake.txt",
    "emerald-rapids": "intel-xeon-6-207-2-emerald-rapids.txt",
}


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
        return {p: [s, s * 1.01] for p, s in FAST.items()}  # two rounds that agree

    monkeypatch.setattr(autoprecision, "measure", fake)
    return calls


@pytest.mark.slow
def test_a_step_of_a_tiny_model_is_timed_after_its_first_steps() -> None:
    cfg = tiny_config("augmented")
    model = probe.probe_model(cfg, "float32")
    seconds = probe.seconds_per_step(model, probe.probe_batches(cfg), budget_s=0.05)
    assert 0 < seconds < 5
    assert model.optimizer.iterations.numpy() >= probe.UNTIMED_STEPS + 1  # stopped once the budget was spent


@pytest.mark.slow
def test_measuring_leaves_the_policy_as_it_was_though_clearing_the_session_resets_it() -> None:
    with policy("bfloat16"):
        seconds = autoprecision.measure(tiny_config("baseline"), rounds=1, budget_s=0.01)
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert set(seconds) == {"float32", "bfloat16"} and all(len(r) == 1 and 0 < r[0] < 5 for r in seconds.values())
    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.parametrize(
    ("float32", "bfloat16", "chosen"),
    [(0.10, 0.05, "bfloat16"), (0.10, 0.096, "float32"), (0.10, 0.15, "float32"), (0.10, 0.10, "float32")],
)
def test_bfloat16_is_chosen_only_when_clearly_faster(float32, bfloat16, chosen) -> None:
    assert autoprecision.faster({"float32": float32, "bfloat16": bfloat16}) == chosen


def test_the_first_choice_measures_and_caches_the_next_reads_the_cache(cache: Path, measured: list) -> None:
    from tensorflow.python.util import _pywrap_util_port

    cfg = tiny_config("baseline")
    first = autoprecision.choose(cfg)
    assert (first.precision, first.source, first.seconds_per_step) == ("bfloat16", "measured", FAST)
    stored = json.loads(cache.read_text())[autoprecision.cache_key(cfg, autoprecision.run_threads())]
    assert stored["precision"] == "bfloat16" and stored["model"] == "cnn"
    # The entry names the machine as the run's fingerprint does, with the oneDNN state TensorFlow runs here.
    assert f"oneDNN {'on' if _pywrap_util_port.IsMklEnabled() else 'off'}" in stored["machine"]
    again = autoprecision.choose(cfg)
    assert (again.precision, again.source, again.seconds_per_step) == ("bfloat16", "cached", FAST)
    assert len(measured) == 1
    assert again.metrics() == {
        "precision_probe_float32_ms_per_step": 20.0,
        "precision_probe_bfloat16_ms_per_step": 10.0,
    }


def test_rounds_that_disagree_train_in_float32_cache_nothing_and_the_next_run_measures_again(
    cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """bfloat16 2x faster in one round and 1.5x slower in the other: a load moved under the probe; the run takes
    float32 with both best timings, says so, and caches nothing; rounds that then agree are cached."""
    timings = iter(
        [{"float32": [0.02, 0.02], "bfloat16": [0.01, 0.03]}, {"float32": [0.02, 0.021], "bfloat16": [0.01, 0.011]}]
    )
    monkeypatch.setattr(autoprecision, "measure", lambda cfg: next(timings))
    cfg = tiny_config("baseline")
    with caplog.at_level(logging.WARNING, logger=autoprecision.__name__):
        first = autoprecision.choose(cfg)
    assert (first.precision, first.source, first.seconds_per_step) == ("float32", "unsettled", FAST)
    assert first.tags() == {"precision_auto": "unsettled"} and "the rounds disagree" in caplog.text
    assert not cache.exists()
    again = autoprecision.choose(cfg)
    assert (again.precision, again.source) == ("bfloat16", "measured")
    assert autoprecision.choose(cfg).source == "cached"


@pytest.mark.parametrize(
    ("rounds", "answer"),
    [
        ({"float32": [0.10, 0.10], "bfloat16": [0.05, 0.06]}, True),  # bfloat16 in both
        ({"float32": [0.10, 0.12], "bfloat16": [0.15, 0.20]}, True),  # float32 in both
        ({"float32": [0.10, 0.10], "bfloat16": [0.05, 0.12]}, False),  # one round each way
        ({"float32": [0.10], "bfloat16": [0.05]}, True),  # one round cannot disagree
    ],
)
def test_a_decision_is_settled_when_every_round_gives_it(rounds, answer) -> None:
    assert autoprecision.settled(rounds) is answer


def test_each_model_has_its_own_entry_and_an_unreadable_cache_is_measured_again(cache: Path, measured) -> None:
    autoprecision.choose(tiny_config("baseline"))
    autoprecision.choose(tiny_config("transfer"))
    assert len(json.loads(cache.read_text())) == 2
    cache.write_text("{not json")
    assert autoprecision.choose(tiny_config("baseline")).source == "measured"
    assert len(measured) == 3


def key(kind: str = "zen3", env: dict[str, str] | None = None, threads: int = 2, *overrides: str) -> str:
    cfg = tiny_config("baseline", *overrides)
    return autoprecision.cache_key(cfg, threads, cpuinfo=SAMPLES / KINDS[kind], environ=env or {})


def test_the_key_is_the_machine_fingerprint_and_the_workload() -> None:
    base = key()
    assert key("zen3", {ONEDNN_ENV: "1"}) != base  # only oneDNN's state differs: other kernels, other speeds
    assert key("zen3", {ONEDNN_ENV: "0"}) == base  # the state TensorFlow runs here anyway
    assert key("zen3", None, 1) != base  # only the thread count differs
    assert key("ice-lake") != key("emerald-rapids")  # one model name, with and without bfloat16 and AMX
    assert key("zen3", None, 2, "trainer.image_size=64") != base
    assert key("zen3", None, 2, "seed=7") == base
    assert key("zen3", None, 2, "trainer.precision=float32") == key("zen3", None, 2, "trainer.precision=auto")


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


def test_the_benchmark_names_what_auto_chose_and_how(cache: Path, measured: list) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    import auto_precision

    first, again = auto_precision.decide("baseline"), auto_precision.decide("baseline")
    assert first.startswith("| baseline | bfloat16 | measured | 0.020 | 0.010 | 0.50 | ")
    assert again.startswith("| baseline | bfloat16 | cached | 0.020 | 0.010 | 0.50 | ") and len(measured) == 1
