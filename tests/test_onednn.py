"""trainer.onednn: the rule that leaves TensorFlow's default only for a clear win, the probe's order, the cache key
(the fingerprint without its oneDNN part, and the workload), what `apply` sets before TensorFlow is imported (the
user's TF_ENABLE_ONEDNN_OPTS winning), and, in the slow tier, the probe's child processes and the setting reaching
TensorFlow in a training run. The timings themselves are benchmarks, never asserted here."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF, REPO, tiny_config, tiny_overrides, without_tensorflow

from catdog.common.machine import ONEDNN_ENV, cpu_flags, onednn_state
from catdog.settings.params import compose_config
from catdog.train import onednn
from catdog.train.probe import CACHE_ENV

SAMPLES = Path(__file__).parent / "data" / "cpuinfo"
DEFAULT = onednn_state(cpu_flags(), {})["on"]  # TensorFlow's choice for this machine's CPU
OTHER = onednn.name(not DEFAULT)


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No TF_ENABLE_ONEDNN_OPTS (the suite sets TensorFlow's default, tests/conftest.py) and an empty cache."""
    for name in (ONEDNN_ENV, onednn.SET_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / onednn.CACHE_NAME


@pytest.mark.parametrize(
    ("default", "seconds", "on"),
    [
        (False, {"off": [0.10, 0.11], "on": [0.05, 0.06]}, True),  # twice >= 1.8x faster; noise 20%
        (False, {"off": [0.10], "on": [0.05]}, False),  # one pair: no second look, no switch
        (False, {"off": [0.100, 0.100], "on": [0.097, 0.096]}, False),  # faster, but within the 5% margin
        (False, {"off": [0.10, 0.20], "on": [0.06, 0.09]}, True),  # the load drifted: both pairs still 1.67x+
        (False, {"off": [0.10, 0.11], "on": [0.05, 0.09]}, False),  # 2.0x, 1.2x: within the on children's 80% spread
        (False, {"off": [0.10, 0.10], "on": [0.05, 0.11]}, False),  # the second pair found it slower
        (True, {"on": [0.10, 0.11], "off": [0.05, 0.06]}, False),  # where the default is on, off can win too
        (True, {"on": [0.10, 0.10], "off": [0.12, 0.13]}, True),
    ],
)
def test_the_default_is_left_only_for_a_win_above_margin_and_noise(default, seconds, on) -> None:
    assert onednn.faster(seconds, default) is on


def test_the_second_pair_is_timed_only_after_a_first_win_and_in_reverse(monkeypatch, clean_env) -> None:
    cfg = tiny_config("baseline")
    calls: list[bool] = []
    times = {True: 0.05, False: 0.10}

    def probe(cfg, threads, on):
        calls.append(on)
        return times[on]

    monkeypatch.setattr(onednn, "probe", probe)
    assert onednn.measure(cfg, 1, default=False) == {"on": [0.05, 0.05], "off": [0.10, 0.10]}
    assert calls == [False, True, True, False]
    calls.clear()
    assert onednn.measure(cfg, 1, default=True) == {"on": [0.05], "off": [0.10]}  # off was slower: done
    assert calls == [True, False]
    monkeypatch.setattr(onednn, "probe", lambda cfg, threads, on: None)
    assert onednn.measure(cfg, 1, default=False) is None


@pytest.mark.parametrize(
    ("seconds", "settled"),
    [
        ({"off": [0.10], "on": [0.10]}, True),  # one pair: the default unbeaten
        ({"off": [0.10, 0.11], "on": [0.05, 0.06]}, True),  # both pairs beat it
        ({"off": [0.55, 0.57], "on": [0.51, 0.20]}, False),  # beside a test suite: 1.08x, then 2.85x
        ({"off": [0.10, 0.10], "on": [0.05, 0.11]}, False),  # the second pair found it slower
    ],
)
def test_only_pairs_that_agree_settle_the_decision(seconds, settled) -> None:
    assert onednn.settled(seconds, default=False) is settled


def test_an_unsettled_decision_keeps_the_default_for_this_run_and_is_measured_again(
    monkeypatch, clean_env, caplog
) -> None:
    """The other state wins the first pair by 1.08x and the second by 2.85x, its two children 2.55x apart: the run
    keeps TensorFlow's default, says why, and caches nothing; the next run's steady timings are cached."""
    cfg = tiny_config("baseline")
    unsteady = iter([0.55, 0.51, 0.20, 0.57])  # the order measure() times them: default, other, other, default
    monkeypatch.setattr(onednn, "probe", lambda cfg, threads, on: next(unsteady))
    with caplog.at_level(logging.WARNING, logger=onednn.__name__):
        found = onednn.choose(cfg, 1)
    assert (found.on, found.source) == (DEFAULT, "unsettled")
    assert found.seconds_per_step == {onednn.name(DEFAULT): [0.55, 0.57], OTHER: [0.51, 0.20]}
    assert "the two timings disagree" in caplog.text and not clean_env.exists()
    steady = iter([0.10, 0.05, 0.05, 0.10])
    monkeypatch.setattr(onednn, "probe", lambda cfg, threads, on: next(steady))
    measured, again = onednn.choose(cfg, 1), onednn.choose(cfg, 1)
    assert (measured.on, measured.source, again.on, again.source) == (not DEFAULT, "measured", not DEFAULT, "cached")


def key(kind: str, env: dict[str, str] | None = None, threads: int = 2, *overrides: str) -> str:
    cpuinfo = SAMPLES / {"zen3": "amd-epyc-25-1-1-milan.txt", "zen2": "amd-epyc-23-49-0-rome.txt"}[kind]
    return onednn.cache_key(tiny_config("baseline", *overrides), threads, cpuinfo=cpuinfo, environ=env or {})


def test_the_key_is_the_fingerprint_without_onednn_and_the_workload() -> None:
    base = key("zen3")
    assert key("zen3", {ONEDNN_ENV: "1"}) == base  # what is decided is not part of the key
    assert key("zen2") != base
    assert key("zen3", None, 1) != base
    assert key("zen3", None, 2, "trainer.batch_size=4") != base
    assert key("zen3", None, 2, "trainer.precision=bfloat16") != base
    assert key("zen3", None, 2, "trainer.precision=auto") == base  # auto's probe times float32
    assert key("zen3", None, 2, "seed=7") == base


APPLY = """
import json, os, sys
from pathlib import Path
from catdog.settings.params import compose_config
from catdog.train import onednn
cfg = compose_config(Path(sys.argv[1]), sys.argv[2:])
found = onednn.apply(cfg)
print(json.dumps([os.environ.get("TF_ENABLE_ONEDNN_OPTS"), found.on, found.source, onednn.decision().tags()]))
"""


def apply_in_a_process(tmp_path: Path, *overrides: str, **env: str) -> tuple[list, str]:
    """`onednn.apply` in a process of its own that cannot import TensorFlow: (TF_ENABLE_ONEDNN_OPTS after it, on,
    source, the decision's tags), and what it logged."""
    base = {k: v for k, v in os.environ.items() if k not in (ONEDNN_ENV, onednn.SET_ENV)}
    blocked = without_tensorflow({**base, **env}, tmp_path, "apply imported TensorFlow")
    argv = [sys.executable, "-c", "import logging; logging.basicConfig()\n" + APPLY, str(REPO / "conf"), *overrides]
    done = subprocess.run(argv, env=blocked, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


@pytest.mark.parametrize("setting", ["on", "off"])
def test_on_and_off_are_set_before_tensorflow_is_imported(tmp_path: Path, setting: str) -> None:
    found, logged = apply_in_a_process(tmp_path, "variant=baseline", f"trainer.onednn={setting}")
    value = "1" if setting == "on" else "0"
    assert found == [value, setting == "on", "setting", {"onednn": setting, "onednn_setting": setting,
                                                         "onednn_decision": "setting"}]  # fmt: skip
    assert logged == ""


def test_the_users_variable_wins_over_the_setting_and_the_run_says_so(tmp_path: Path) -> None:
    found, logged = apply_in_a_process(tmp_path, "variant=baseline", f"trainer.onednn={OTHER}", **{ONEDNN_ENV: "2"})
    # "2" is no value TensorFlow knows: it keeps its default, and so does the run.
    assert found[:3] == ["2", DEFAULT, "environment"]
    assert f"trainer.onednn={OTHER} not applied: {ONEDNN_ENV}=2 in the environment wins" in logged
    inherited = {ONEDNN_ENV: "1" if DEFAULT else "0", onednn.SET_ENV: "1" if DEFAULT else "0"}
    found, _ = apply_in_a_process(tmp_path / "b", "variant=baseline", f"trainer.onednn={OTHER}", **inherited)
    assert found[:3] == ["0" if DEFAULT else "1", not DEFAULT, "setting"]  # a parent's own choice is no user's


def test_auto_reads_its_cached_decision_without_measuring(tmp_path: Path, clean_env: Path) -> None:
    overrides = ["variant=baseline", "trainer.threads=1", "trainer.batch_size=4"]
    entry = {"on": not DEFAULT, "seconds_per_step": {"on": [0.05, 0.05], "off": [0.1, 0.1]}}
    clean_env.parent.mkdir(parents=True)
    clean_env.write_text(json.dumps({onednn.cache_key(compose_config(CONF, overrides), 1): entry}))
    found, logged = apply_in_a_process(tmp_path, *overrides, **{CACHE_ENV: str(clean_env.parent)})
    assert found[:3] == ["0" if DEFAULT else "1", not DEFAULT, "cached"] and logged == ""


def test_a_process_where_tensorflow_runs_keeps_it_and_warns(clean_env, caplog, monkeypatch) -> None:
    from tensorflow.python.util import _pywrap_util_port

    monkeypatch.setattr(onednn, "_APPLIED", None)
    running = bool(_pywrap_util_port.IsMklEnabled())
    assert (onednn.decision().on, onednn.decision().source) == (running, "process")  # not applied: what runs
    with caplog.at_level(logging.WARNING, logger=onednn.__name__):
        found = onednn.apply(tiny_config("baseline", f"trainer.onednn={onednn.name(not running)}"))
    assert (found.on, found.source) == (running, "process") and onednn.decision() == found
    assert "TensorFlow already runs in this process" in caplog.text
    assert ONEDNN_ENV not in os.environ


@pytest.mark.slow
def test_a_probe_child_times_the_run_s_model_in_the_state_asked_for(clean_env: Path) -> None:
    cfg = tiny_config("baseline")
    for on in (True, False):
        seconds = onednn.probe(cfg, 1, on)
        assert seconds is not None and 0 < seconds < 5, on  # a child that ran the other state returns None


@pytest.mark.slow
def test_a_failed_probe_keeps_the_default_and_caches_nothing(clean_env: Path, caplog) -> None:
    cfg = tiny_config("transfer", "model.net.weights=/nonexistent/weights.h5")
    with caplog.at_level(logging.WARNING, logger=onednn.__name__):
        found = onednn.choose(cfg, 1)
    assert (found.on, found.source) == (DEFAULT, "default")
    assert "oneDNN probe with TF_ENABLE_ONEDNN_OPTS=" in caplog.text
    assert not clean_env.exists()


@pytest.mark.slow
def test_the_setting_reaches_tensorflow_in_a_training_run(split_data: Path, isolated_mlflow: str) -> None:
    """TensorFlow's own notice (`port.cc`: "oneDNN custom operations are on") says what it runs; forced to the
    state TensorFlow would not choose here, the run runs it."""
    env = {k: v for k, v in os.environ.items() if k not in (ONEDNN_ENV, onednn.SET_ENV)}
    env |= {"MLFLOW_TRACKING_URI": isolated_mlflow, "CATDOG_DEBUG": "1", "TF_CPP_MIN_LOG_LEVEL": "0"}
    overrides = [*tiny_overrides("baseline", outputs="adhoc"), f"trainer.onednn={OTHER}"]
    argv = [sys.executable, str(REPO / "src" / "train.py"), *overrides]
    done = subprocess.run(argv, cwd=split_data, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert ("oneDNN custom operations are on" in done.stderr) is (not DEFAULT), done.stderr[-3000:]
