"""`trainer.precision`: the numeric precision a run trains in, as one Keras dtype policy set for the run and restored
after it.

- float32: everything in float32.
- bfloat16: Keras' `mixed_bfloat16` (layers compute in bfloat16, variables and the logits stay float32). Fast where
  the hardware computes bfloat16 natively (AVX512-BF16 or AMX on x86 CPUs, Ampere or later GPUs); elsewhere
  TensorFlow emulates it and a run is slower than in float32, so it warns once.
- auto: measured before the run (`catdog.train.autoprecision`): a few steps of the run's model in each precision, the
  faster one chosen and cached per machine fingerprint and workload. The run's numbers then depend on the machine by a
  whole precision; the study's settings stay float32 (docs/reproducibility.md, "Precision", says until when).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from pathlib import Path

from catdog.common.machine import CPUINFO, cpu_flags

POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
CPU_FLAGS = ("avx512_bf16", "amx_bf16")


class EmulatedPrecisionWarning(UserWarning):
    """bfloat16 was asked for on hardware that only emulates it."""


def gpu_has_bf16() -> bool:
    """Whether a visible GPU computes bfloat16 natively (CUDA compute capability 8.0 or later)."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability and tuple(capability) >= (8, 0):
            return True
    return False


@functools.cache
def native_bf16(cpuinfo: Path = CPUINFO) -> str | None:
    """What computes bfloat16 natively on this machine (e.g. "CPU avx512_bf16"), or None."""
    if gpu_has_bf16():
        return "GPU"
    flags = cpu_flags(cpuinfo) & set(CPU_FLAGS)
    return f"CPU {' '.join(sorted(flags))}" if flags else None


def resolve(setting: str, cpuinfo: Path = CPUINFO) -> str:
    """The precision a run with `setting` (float32 or bfloat16) trains in; `auto` needs the run's model, so
    `catdog.train.autoprecision.choose` resolves it. bfloat16 warns where the CPU (`cpuinfo`) and GPUs only emulate
    it."""
    if setting not in POLICIES:
        raise ValueError(f"resolve({setting!r}): auto is resolved by measuring the run's model (autoprecision.choose)")
    if setting == "bfloat16" and not native_bf16(cpuinfo):
        warnings.warn(
            "trainer.precision=bfloat16 on hardware without native bfloat16 (no avx512_bf16/amx_bf16 CPU flag, no "
            "GPU of compute capability >= 8.0): TensorFlow emulates it, usually slower than float32; "
            "trainer.precision=auto measures which is faster here",
            EmulatedPrecisionWarning,
            stacklevel=2,
        )
    return setting


@contextlib.contextmanager
def policy(precision: str) -> Iterator[None]:
    """Keras' global dtype policy for one run of `precision` (float32 or bfloat16), restored when the run ends, so
    the next job of a sweep in this process starts from the policy it would have had alone."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(POLICIES[precision])
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
