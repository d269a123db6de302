"""trainer.precision: what each setting trains in on hardware with and without native bfloat16, and its checks."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml
from conftest import REPO, tiny_config

from catdog.common import machine
from catdog.settings.checks import ConfigError, validate
from catdog.train import precision

FLAGS = "fpu vme sse2 avx2 avx512f avx512bw avx512_bf16 avx512_fp16"
SAMPLES = Path(__file__).parent / "data" / "cpuinfo"
# Each recorded CPU kind and what computes bfloat16 natively on it (tests/data/cpuinfo/README.md).
NATIVE = {
    "intel-xeon-6-207-2-emerald-rapids.txt": "CPU amx_bf16 avx512_bf16",
    "amd-epyc-26-2-1-turin.txt": "CPU avx512_bf16",
    "intel-xeon-6-106-6-ice-lake.txt": None,
    "amd-epyc-23-49-0-rome.txt": None,
    "amd-epyc-25-1-1-milan.txt": None,
}
needs_no_gpu = pytest.mark.skipif("precision.gpu_has_bf16()", reason="a GPU with native bfloat16 decides alone")


def test_cpu_flags_come_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {FLAGS}\n\nprocessor\t: 1\n")
    assert "avx512_bf16" in machine.cpu_flags(cpuinfo)
    assert machine.cpu_model(cpuinfo) == "Some CPU"
    assert machine.cpu_flags(tmp_path / "absent") == set()


@needs_no_gpu
@pytest.mark.parametrize("sample", sorted(NATIVE))
def test_bfloat16_warns_exactly_where_the_cpu_emulates_it_and_float32_never(sample: str) -> None:
    cpuinfo = SAMPLES / sample
    assert precision.native_bf16(cpuinfo) == NATIVE[sample]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert precision.resolve("float32", cpuinfo) == "float32"
        assert not caught, [str(w.message) for w in caught]
        assert precision.resolve("bfloat16", cpuinfo) == "bfloat16"
    emulated = [w for w in caught if issubclass(w.category, precision.EmulatedPrecisionWarning)]
    assert len(emulated) == (NATIVE[sample] is None)


@pytest.mark.parametrize(("setting", "compute", "variables"), [("float32", "float32", "float32"),
                                                                ("bfloat16", "bfloat16", "float32")])  # fmt: skip
def test_a_run_builds_its_model_in_the_precision_it_resolved(setting, compute, variables) -> None:
    """The layers of the run's model compute in the resolved precision; its variables and logits stay float32."""
    from catdog.train.models import build_model

    cfg = tiny_config("baseline")
    resolved = precision.resolve(setting, SAMPLES / "intel-xeon-6-207-2-emerald-rapids.txt")
    with precision.policy(resolved):
        model = build_model(cfg, num_classes=2)
    layers = model.get_layer("net").layers
    hidden = [layer for layer in layers if layer.__class__.__name__ in ("Conv2D", "Dense") and layer.name != "logits"]
    assert len(hidden) == 3 and {layer.compute_dtype for layer in hidden} == {compute}
    assert {w.dtype for layer in layers for w in layer.weights} == {variables}
    assert model.get_layer("net").get_layer("logits").compute_dtype == model.outputs[0].dtype == "float32"


def test_bfloat16_without_native_support_warns_that_it_is_emulated() -> None:
    with pytest.warns(precision.EmulatedPrecisionWarning, match="emulates it, usually slower than float32"):
        assert precision.resolve("bfloat16", SAMPLES / "amd-epyc-25-1-1-milan.txt") == "bfloat16"


def test_auto_is_never_resolved_from_cpu_flags() -> None:
    with pytest.raises(ValueError, match="measuring the run's model"):
        precision.resolve("auto", SAMPLES / "intel-xeon-6-207-2-emerald-rapids.txt")


def test_the_policy_is_the_run_s_and_restored_after_it() -> None:
    import keras

    with precision.policy("bfloat16"):
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"


def test_an_unknown_precision_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="trainer.precision: got 'float16'; expected one of float32, bfloat16, auto"):
        validate(tiny_config("baseline", "trainer.precision=float16"))


def test_every_variant_trains_in_the_precision_params_yaml_gives_it() -> None:
    variants = yaml.safe_load((REPO / "params.yaml").read_text())["variants"]
    for variant in ("baseline", "augmented", "scaled", "transfer"):
        assert tiny_config(variant).trainer.precision == variants[variant]["trainer"]["precision"]
