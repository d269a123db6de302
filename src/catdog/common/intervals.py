"""The interval every accuracy is reported with: a 95% Wilson score interval, shared by the comparison (a model's
test accuracy) and training (the majority-class guess a dead run never left)."""

from __future__ import annotations

from scipy.stats import binomtest

CONFIDENCE = 0.95


def accuracy_interval(correct: int, total: int) -> tuple[float, float]:
    """Wilson score interval for an accuracy of `correct` out of `total`."""
    ci = binomtest(correct, total).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return float(ci.low), float(ci.high)
