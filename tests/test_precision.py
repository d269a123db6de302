"""trainer.precision: what each setting trains in on hardware with and without native bfloat16, and its checks."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from conftest import tiny_config

from catdog.common import machine
from catdog.settings.checks import ConfigError, validate
from catdog.train import precision

FLAGS = "fpu vme sse2 avx2 avx512f avx512bw avx512_bf16 avx512_fp16"


@pytest.fixture
def hardware(monkeypatch: pytest.MonkeyPatch):
    """Pretend the machine has (`"CPU avx512_bf16"`) or lacks (None) native bfloat16."""

    def set_native(found: str | None) -> None:
        monkeypatch.setattr(precision, "native_bf16", lambda: found)

    return set_native


def test_cpu_flags_come_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {FLAGS}\n\nprocessor\t: 1\n")
    assert "avx512_bf16" in machine.cpu_flags(cpuinfo)
    assert machine.cpu_model(cpuinfo) == "Some CPU"
    assert machine.cpu_flags(tmp_path / "absent") == set()


@pytest.mark.parametrize(
    ("native", "setting", "trains_in"),
    [
        ("CPU avx512_bf16", "bfloat16", "bfloat16"),
        (None, "float32", "float32"),
        ("GPU", "float32", "float32"),
    ],
)
def test_each_setting_trains_in_what_the_hardware_allows(hardware, native, setting, trains_in) -> None:
    hardware(native)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these warns
        assert precision.resolve(setting) == trains_in


def test_bfloat16_without_native_support_warns_that_it_is_emulated(hardware) -> None:
    hardware(None)
    with pytest.warns(precision.EmulatedPrecisionWarning, match="emulates it, usually slower than float32"):
        assert precision.resolve("bfloat16") == "bfloat16"


def test_auto_is_never_resolved_from_cpu_flags(hardware) -> None:
    hardware("CPU avx512_bf16")
    with pytest.raises(ValueError, match="measuring the run's model"):
        precision.resolve("auto")


def test_the_policy_is_the_run_s_and_restored_after_it() -> None:
    import keras

    with precision.policy("bfloat16"):
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"


def test_an_unknown_precision_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="trainer.precision: got 'float16'; expected one of float32, bfloat16, auto"):
        validate(tiny_config("baseline", "trainer.precision=float16"))


def test_every_variant_chooses_its_precision_in_params() -> None:
    for variant in ("baseline", "augmented", "scaled", "transfer"):
        assert tiny_config(variant).trainer.precision in ("float32", "bfloat16")
