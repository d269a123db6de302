"""How many xdist workers `-n auto` starts: the full suite waits on servers and polls, the fast tier on nothing."""

from __future__ import annotations

from types import SimpleNamespace

from conftest import pytest_xdist_auto_num_workers

from catdog.common.machine import available_cores


def test_the_full_suite_gets_a_worker_more_than_the_cores_and_the_fast_tier_one_per_core() -> None:
    cores = available_cores()
    for markexpr, workers in (("", cores + 1), ("slow", cores + 1), ("not slow", cores)):
        config = SimpleNamespace(option=SimpleNamespace(markexpr=markexpr))
        assert pytest_xdist_auto_num_workers(config) == workers, markexpr
