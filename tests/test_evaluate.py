"""Statistics of the comparison: Wilson intervals, exact McNemar, Holm adjustment, per-class scores."""

from __future__ import annotations

import numpy as np
import pytest

from catdog.common.intervals import accuracy_interval
from catdog.compare.statistics import holm, log_loss, mcnemar_exact, pairwise_tests, score


def test_wilson_interval_matches_the_closed_form() -> None:
    low, high = accuracy_interval(450, 500)
    # Wilson score interval for p = 0.9, n = 500, z = 1.959964.
    assert low == pytest.approx(0.87063, abs=1e-4)
    assert high == pytest.approx(0.92338, abs=1e-4)


def test_exact_mcnemar_counts_only_discordant_pairs() -> None:
    a = np.array([True] * 10 + [False] * 2 + [True] * 50)
    b = np.array([False] * 10 + [True] * 2 + [True] * 50)
    result = mcnemar_exact(a, b)
    assert (result["only_a_right"], result["only_b_right"]) == (10, 2)
    # Two-sided binomial test of 2 successes in 12 trials at p = 0.5: 2 * P(X <= 2) = 2 * 79 / 4096.
    assert result["p_value"] == pytest.approx(2 * 79 / 4096)


def test_identical_models_are_not_different() -> None:
    same = np.array([True, False, True])
    assert mcnemar_exact(same, same)["p_value"] == 1.0


def test_holm_adjustment() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_pairwise_tests_flag_significance_after_adjustment() -> None:
    rng = np.random.default_rng(0)
    strong = np.ones(400, dtype=bool)
    weak = rng.random(400) < 0.6
    weaker = rng.random(400) < 0.58
    tests = {(t["a"], t["b"]): t for t in pairwise_tests({"strong": strong, "weak": weak, "weaker": weaker})}
    assert tests[("strong", "weak")]["significant"]
    assert not tests[("weak", "weaker")]["significant"]
    assert all(t["p_holm"] >= t["p_value"] for t in tests.values())


def test_score_per_class_and_confusion() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    preds = np.array([0, 0, 1, 1, 1, 0])
    result = score(preds, labels, ["cats", "dogs"])
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["confusion_matrix"] == [[2, 1], [1, 2]]
    assert result["per_class"]["cats"]["precision"] == pytest.approx(2 / 3)
    assert result["per_class"]["dogs"]["recall"] == pytest.approx(2 / 3)
    assert result["ci_low"] < result["accuracy"] < result["ci_high"]


def test_log_loss_of_confident_right_and_wrong() -> None:
    logits = np.array([[10.0, -10.0], [-10.0, 10.0]])
    assert log_loss(logits, np.array([0, 1])) == pytest.approx(0, abs=1e-6)
    assert log_loss(logits, np.array([1, 0])) == pytest.approx(20, abs=1e-3)
