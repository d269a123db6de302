"""Honest model comparison on one test split: accuracy with intervals, per-class scores, exact McNemar tests."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from catdog.common.intervals import accuracy_interval

ALPHA = 0.05


def log_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of integer labels under softmax(logits)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean()) + 0.0  # never -0.0


def score(predictions: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, object]:
    """Accuracy with its interval, per-class precision/recall/F1 and the confusion matrix."""
    correct = int((predictions == labels).sum())
    low, high = accuracy_interval(correct, len(labels))
    idx = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=idx, zero_division=0)
    return {
        "accuracy": correct / len(labels),
        "ci_low": low,
        "ci_high": high,
        "per_class": {
            cls: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for cls, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": confusion_matrix(labels, predictions, labels=idx).tolist(),
    }


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float | int]:
    """Exact McNemar test on paired right/wrong outcomes: a binomial test on the discordant pairs."""
    only_a = int((correct_a & ~correct_b).sum())
    only_b = int((~correct_a & correct_b).sum())
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"only_a_right": only_a, "only_b_right": only_b, "p_value": float(p)}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (monotone, capped at 1)."""
    order = np.argsort(p_values)
    adjusted = np.empty(len(p_values))
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (len(p_values) - rank) * p_values[i])
        adjusted[i] = min(running, 1.0)
    return adjusted.tolist()


def pairwise_tests(correct: Mapping[str, np.ndarray]) -> list[dict[str, object]]:
    """McNemar for every pair of models, with Holm-adjusted p-values and a significance verdict."""
    pairs = list(itertools.combinations(correct, 2))
    tests = [{"a": a, "b": b, **mcnemar_exact(correct[a], correct[b])} for a, b in pairs]
    for test, adjusted in zip(tests, holm([t["p_value"] for t in tests]), strict=True):
        test["p_holm"] = adjusted
        test["significant"] = adjusted < ALPHA
    return tests
