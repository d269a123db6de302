"""The machine a run ran on: its fingerprint (what decides a run's numbers: the CPU kind and the ISA flags that
choose kernels, whether TensorFlow runs oneDNN, TensorFlow's and Keras' versions, the run's threads and precision)
with a short id over those parts, and the same in words a reader can compare. Reads /proc/cpuinfo and the
environment; imports no TensorFlow."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")
# The CPU flags that choose TensorFlow's and oneDNN's kernels on x86 (float32 FMA paths, AVX-512, VNNI, bfloat16,
# AMX tiles): two CPUs that differ in one of them may run other kernels, so other float sums.
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
# TensorFlow 2.21 turns its oneDNN optimisations on by default on Linux x86 only where the CPU has one of these
# (tensorflow/core/util/util.cc; checked against `_pywrap_util_port.IsMklEnabled()` in tests/test_machine.py).
ONEDNN_DEFAULT_FLAGS = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
# The fingerprint's parts that change a run's numbers; the id is a hash over them (cores and stepping are shown but
# do not count: the thread count is what the cores change).
ID_PARTS = ("vendor", "family", "model", "flags", "onednn", "tensorflow", "keras", "threads", "precision")
ID_LENGTH = 10


def available_cores() -> int:
    """The cores this process may use: Slurm's allocation inside a Slurm job, else this process's CPU affinity."""
    allocated = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE")
    if allocated:
        return int(allocated)
    return len(os.sched_getaffinity(0))


def cpuinfo_fields(cpuinfo: Path = CPUINFO) -> dict[str, str]:
    """The first CPU's fields of /proc/cpuinfo (empty where there is none, as on macOS)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpuinfo_field(names: tuple[str, ...], cpuinfo: Path = CPUINFO) -> str | None:
    """The first CPU's value of the first of `names` /proc/cpuinfo has (None where it is absent)."""
    fields = cpuinfo_fields(cpuinfo)
    return next((fields[n] for n in names if n in fields), None)


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """The CPU's feature flags (x86 `flags`, Arm `Features`)."""
    return set((cpuinfo_field(("flags", "Features"), cpuinfo) or "").split())


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    return cpuinfo_field(("model name",), cpuinfo) or platform.processor() or "unknown CPU"


def onednn_state(flags: set[str], environ: Mapping[str, str] = os.environ) -> dict[str, object]:
    """Whether TensorFlow runs its oneDNN optimisations: `TF_ENABLE_ONEDNN_OPTS` as set (1/true, 0/false), else
    TensorFlow's default for this CPU; with the variable's value (None: unset)."""
    setting = environ.get(ONEDNN_ENV)
    value = (setting or "").strip().lower()
    if value in ("1", "true"):
        on = True
    elif value in ("0", "false"):
        on = False
    else:  # unset, or a value TensorFlow ignores (it logs an error and keeps its default)
        on = platform.machine() in ("x86_64", "AMD64") and bool(flags & set(ONEDNN_DEFAULT_FLAGS))
    return {"on": on, "env": setting}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def fingerprint(
    threads: int | None = None,
    precision: str | None = None,
    *,
    cpuinfo: Path = CPUINFO,
    environ: Mapping[str, str] = os.environ,
) -> dict[str, object]:
    """This machine as far as a run's numbers go, with `id`: a hash over `ID_PARTS`. `threads` and `precision`
    are the run's (None where the record is not a training run's)."""
    fields = cpuinfo_fields(cpuinfo)
    flags = set(fields.get("flags", fields.get("Features", "")).split())
    parts: dict[str, object] = {
        "vendor": fields.get("vendor_id") or platform.machine(),
        "family": fields.get("cpu family"),
        "model": fields.get("model"),
        "stepping": fields.get("stepping"),
        "model_name": fields.get("model name") or platform.processor() or "unknown CPU",
        "flags": sorted(flags & set(KERNEL_FLAGS)),
        "cores": available_cores(),
        "onednn": onednn_state(flags, environ),
        "tensorflow": _version("tensorflow"),
        "keras": _version("keras"),
        "threads": threads,
        "precision": precision,
    }
    counted = {k: parts[k] for k in ID_PARTS} | {"onednn": parts["onednn"]["on"]}  # type: ignore[index]
    digest = hashlib.sha256(json.dumps(counted, sort_keys=True).encode()).hexdigest()[:ID_LENGTH]
    return {"id": digest, **parts}


def words(machine: Mapping[str, Any]) -> str:
    """A fingerprint in one line: `AMD EPYC (AuthenticAMD 25/1/1; avx2 fma); 2 cores; oneDNN off; TF 2.21.0,
    Keras 3.15.1; 2 threads, float32 [id 1a2b3c4d5e]`."""
    cpu = f"{machine['model_name']} ({machine['vendor']} {machine['family']}/{machine['model']}/{machine['stepping']}"
    cpu += f"; {' '.join(machine['flags']) or 'no AVX2'})"
    onednn = machine["onednn"]
    dnn = f"oneDNN {'on' if onednn['on'] else 'off'}"
    if onednn["env"] is not None:
        dnn += f" ({ONEDNN_ENV}={onednn['env']})"
    run = [f"{machine['threads']} threads"] if machine["threads"] is not None else []
    run += [str(machine["precision"])] if machine["precision"] is not None else []
    versions = f"TF {machine['tensorflow']}, Keras {machine['keras']}"
    return "; ".join([cpu, f"{machine['cores']} cores", dnn, versions, *([", ".join(run)] if run else [])]) + (
        f" [id {machine['id']}]"
    )


def describe() -> str:
    """OS, CPU model and cores, e.g. `Linux-6.1.0-x86_64-with-glibc2.36; Intel(R) Xeon(R) …; 2 cores`."""
    return f"{platform.platform()}; {cpu_model()}; {available_cores()} cores"
