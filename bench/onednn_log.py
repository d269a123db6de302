"""oneDNN's verbose log (ONEDNN_VERBOSE=1): the ISA it dispatches to, and each executed primitive's kind,
implementation (e.g. `brg_conv_fwd:avx512_core`, `jit_bf16:avx512_core`), propagation kind and source data type.

An exec line reads `onednn_verbose,v1,primitive,exec,cpu,<kind>,<impl>,<prop>,<memory descriptors>,...,<ms>`.
"""

from __future__ import annotations

from collections import defaultdict

PREFIX = "onednn_verbose"


def isa(text: str) -> str | None:
    """The `isa:` info line's value, e.g. `Intel AVX-512 with Intel DL Boost`."""
    for line in text.splitlines():
        if line.startswith(PREFIX) and ",info,cpu,isa:" in line:
            return line.split("isa:", 1)[1].strip()
    return None


def source_type(descriptors: str) -> str:
    """The data type of the primitive's first memory descriptor (`src:bf16::blocked:acdb::f0` -> `bf16`)."""
    first = descriptors.split(" ", 1)[0]
    name, _, rest = first.partition(":")
    return name.rpartition("_")[2] if "_" in name else rest.split(":", 1)[0]  # gemm_api writes `src_f32::...`


def kernels(text: str, steps: int, count: int = 12) -> list[dict]:
    """The `count` costliest (kind, implementation, propagation, type) groups: calls and milliseconds per step."""
    calls: dict[tuple[str, str, str, str], int] = defaultdict(int)
    ms: dict[tuple[str, str, str, str], float] = defaultdict(float)
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) < 10 or fields[0] != PREFIX or fields[3] != "exec":
            continue
        try:
            seconds = float(fields[-1])
        except ValueError:
            continue
        key = (fields[5], fields[6], fields[7], source_type(fields[8]))
        calls[key] += 1
        ms[key] += seconds
    ranked = sorted(ms, key=lambda k: -ms[k])[:count]
    return [
        {"primitive": k[0], "implementation": k[1], "propagation": k[2], "type": k[3],
         "calls_per_step": round(calls[k] / steps, 2), "ms_per_step": round(ms[k] / steps, 2)}
        for k in ranked
    ]  # fmt: skip
