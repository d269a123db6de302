"""The machine fingerprint: one id per CPU kind, oneDNN state, thread count and precision, read from recorded
/proc/cpuinfo samples of the machines that ran this project."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from catdog.common.machine import fingerprint, onednn_state, words

SAMPLES = Path(__file__).parent / "data" / "cpuinfo"
KINDS = {
    "ice-lake": ("intel-xeon-6-106-6-ice-lake.txt", True),
    "emerald-rapids": ("intel-xeon-6-207-2-emerald-rapids.txt", True),
    "zen2": ("amd-epyc-23-49-0-rome.txt", False),
    "zen3": ("amd-epyc-25-1-1-milan.txt", False),
    "zen5": ("amd-epyc-26-2-1-turin.txt", True),
}


def of(kind: str, env: dict[str, str] | None = None, threads: int = 2, precision: str = "float32") -> dict:
    return fingerprint(threads, precision, cpuinfo=SAMPLES / KINDS[kind][0], environ=env or {})


def test_every_kind_has_its_own_id():
    ids = {kind: of(kind)["id"] for kind in KINDS}
    assert len(set(ids.values())) == len(KINDS), ids


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_onednn_default_follows_the_cpu(kind):
    assert of(kind)["onednn"] == {"on": KINDS[kind][1], "env": None}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_forcing_onednn_the_other_way_changes_the_id(kind):
    default = of(kind)
    forced = of(kind, {"TF_ENABLE_ONEDNN_OPTS": "0" if KINDS[kind][1] else "1"})
    assert forced["onednn"]["on"] is not default["onednn"]["on"]
    assert forced["id"] != default["id"]
    # Setting it to what TensorFlow would choose anyway runs the same kernels: the same id.
    assert of(kind, {"TF_ENABLE_ONEDNN_OPTS": "1" if KINDS[kind][1] else "0"})["id"] == default["id"]


def test_threads_and_precision_change_the_id_but_cores_do_not(monkeypatch):
    base = of("zen3")
    assert of("zen3", threads=1)["id"] != base["id"]
    assert of("zen3", precision="bfloat16")["id"] != base["id"]
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "16")
    sixteen = of("zen3")
    assert sixteen["cores"] == 16 and sixteen["id"] == base["id"]


def test_fields_read_from_the_sample():
    machine = of("emerald-rapids")
    assert (machine["vendor"], machine["family"], machine["model"], machine["stepping"]) == (
        "GenuineIntel",
        "6",
        "207",
        "2",
    )
    assert {"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"} <= set(machine["flags"])
    assert "amx_int8" not in machine["flags"]  # only the flags that choose float kernels
    assert machine["tensorflow"] != "absent" and machine["keras"] != "absent"
    line = words(machine)
    assert "GenuineIntel 6/207/2" in line and "oneDNN on" in line and f"[id {machine['id']}]" in line


def test_a_value_tensorflow_ignores_keeps_its_default():
    flags = {"avx2", "fma"}
    assert onednn_state(flags, {"TF_ENABLE_ONEDNN_OPTS": "yes"}) == {"on": False, "env": "yes"}
    assert onednn_state(flags, {"TF_ENABLE_ONEDNN_OPTS": "TRUE"})["on"] is True


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["unset", "the other state"])
def test_onednn_state_is_what_tensorflow_runs_here(setting):
    """The rule against TensorFlow itself, on this machine's CPU: TensorFlow's default, and the variable set to the
    state that is not the default (setting it to the default changes nothing either rule could get wrong)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if setting == "the other state":
        env["TF_ENABLE_ONEDNN_OPTS"] = "0" if fingerprint(environ=env)["onednn"]["on"] else "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    code = "from tensorflow.python.util import _pywrap_util_port as p; print(p.IsMklEnabled())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == str(fingerprint(environ=env)["onednn"]["on"])
