"""How many xdist workers `-n auto` starts: the full suite waits on servers and polls, the fast tier on nothing. The
cores are set from outside, the CPU affinity or a Slurm allocation, so each count expected is a number."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from conftest import pytest_xdist_auto_num_workers

SLURM_VARIABLES = ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE")
TIERS = {"full": "", "slow": "slow", "fast": "not slow"}  # pytest's -m for each


@contextlib.contextmanager
def cpus_pinned(count: int) -> Iterator[None]:
    """This thread's CPU affinity (what the count of cores reads outside Slurm) pinned to `count` of its CPUs, then
    restored; skips where it may use fewer."""
    before = os.sched_getaffinity(0)
    if len(before) < count:
        pytest.skip(f"this process may use {len(before)} CPU(s); pinning {count} needs more")
    os.sched_setaffinity(0, sorted(before)[:count])
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def outside_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SLURM_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def workers() -> dict[str, int]:
    """`-n auto`'s worker count for each tier."""
    return {
        tier: pytest_xdist_auto_num_workers(SimpleNamespace(option=SimpleNamespace(markexpr=markexpr)))
        for tier, markexpr in TIERS.items()
    }


@pytest.mark.parametrize(
    ("cpus", "expected"), [(1, {"full": 2, "slow": 2, "fast": 1}), (2, {"full": 3, "slow": 3, "fast": 2})]
)
def test_the_full_suite_gets_a_worker_more_than_the_cores_and_the_fast_tier_one_per_core(
    monkeypatch: pytest.MonkeyPatch, cpus: int, expected: dict[str, int]
) -> None:
    outside_slurm(monkeypatch)
    with cpus_pinned(cpus):
        assert workers() == expected


@pytest.mark.parametrize(
    ("variable", "cores", "expected"),
    [
        ("SLURM_CPUS_PER_TASK", "6", {"full": 7, "slow": 7, "fast": 6}),
        ("SLURM_CPUS_ON_NODE", "3", {"full": 4, "slow": 4, "fast": 3}),
    ],
)
def test_in_a_slurm_job_the_allocation_counts_not_the_machines_cores(
    monkeypatch: pytest.MonkeyPatch, variable: str, cores: str, expected: dict[str, int]
) -> None:
    outside_slurm(monkeypatch)
    monkeypatch.setenv(variable, cores)
    with cpus_pinned(1):
        assert workers() == expected
