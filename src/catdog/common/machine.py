"""The machine a run ran on, in words a reader can compare (runs tag it; the report shows it per stage)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def available_cores() -> int:
    """The cores this process may use: Slurm's allocation inside a Slurm job, else this process's CPU affinity."""
    allocated = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE")
    if allocated:
        return int(allocated)
    return len(os.sched_getaffinity(0))


def cpuinfo_field(names: tuple[str, ...], cpuinfo: Path = CPUINFO) -> str | None:
    """The first CPU's value of the first of `names` /proc/cpuinfo has (None where it is absent, as on macOS)."""
    try:
        lines = cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return next((line.partition(":")[2].strip() for line in lines if line.split(":")[0].strip() in names), None)


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """The CPU's feature flags (x86 `flags`, Arm `Features`)."""
    return set((cpuinfo_field(("flags", "Features"), cpuinfo) or "").split())


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    return cpuinfo_field(("model name",), cpuinfo) or platform.processor() or "unknown CPU"


def describe() -> str:
    """OS, CPU model and cores, e.g. `Linux-6.1.0-x86_64-with-glibc2.36; Intel(R) Xeon(R) …; 2 cores`."""
    return f"{platform.platform()}; {cpu_model()}; {available_cores()} cores"
