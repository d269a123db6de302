"""A variant trained once per training seed, summed up: the mean, spread and 95% interval of its test scores over
seeds, the seed whose run it is represented by, and the val scores the champion is picked on.

With one seed every summary is that seed's own numbers, unchanged, so a one-seed study reads as it always did.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import TypeVar

from scipy.stats import t as student_t

from catdog.common.intervals import CONFIDENCE

VAL_KEYS = ("best_val_accuracy", "best_val_loss")
Key = TypeVar("Key")


def mean_interval(values: Sequence[float]) -> tuple[float, float, float, float]:
    """(mean, sample standard deviation, low, high): Student's t interval for the mean over seeds at CONFIDENCE,
    clipped to [0, 1] (the values are accuracies); one value has no spread and no interval (sd 0, low = high)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0, mean, mean
    sd = statistics.stdev(values)
    half = float(student_t.ppf((1 + CONFIDENCE) / 2, len(values) - 1)) * sd / len(values) ** 0.5
    return mean, sd, max(0.0, mean - half), min(1.0, mean + half)


def best_on_validation(val: Mapping[Key, Mapping[str, float]]) -> Key:
    """The key with the best val accuracy (ties: the lower val loss at that best epoch, the model's own, then the
    first listed). The one rule for both choices made on validation: a variant's best seed, the run that stands for
    it where one model is needed (McNemar, curves, the registered champion), and the champion among variants (on
    their means over seeds)."""
    order = list(val)
    return min(val, key=lambda k: (-val[k]["best_val_accuracy"], val[k]["best_val_loss"], order.index(k)))


def validation_summary(val: Mapping[int, Mapping[str, float]]) -> dict:
    """A variant's val scores over seeds: the mean of each seed's best-epoch val accuracy and loss (what the champion
    is picked on), the best seed, its best epoch, each seed's best val accuracy, and the seeds whose run did not learn
    (catdog.train.dead_runs)."""
    seed = best_on_validation(val)
    return {
        **{k: statistics.fmean(v[k] for v in val.values()) for k in VAL_KEYS},
        "best_epoch": val[seed]["best_epoch"],
        "seed": seed,
        "per_seed": {str(s): v["best_val_accuracy"] for s, v in val.items()},
        "did_not_learn": [s for s, v in val.items() if v.get("did_not_learn")],
    }


def test_summary(rows: Mapping[int, dict], seed: int) -> dict:
    """A variant's test scores over seeds: mean accuracy with its t interval over seeds, sd, mean loss, per-class
    scores averaged over seeds, the confusion matrix of `seed`'s run, and each seed's accuracy. One seed: its row."""
    if len(rows) == 1:
        return dict(next(iter(rows.values())))
    mean, sd, low, high = mean_interval([r["accuracy"] for r in rows.values()])
    classes = next(iter(rows.values()))["per_class"]
    per_class = {
        c: {m: statistics.fmean(r["per_class"][c][m] for r in rows.values()) for m in ("precision", "recall", "f1")}
        | {"support": classes[c]["support"]}
        for c in classes
    }
    return {
        "accuracy": mean,
        "ci_low": low,
        "ci_high": high,
        "sd": sd,
        "loss": statistics.fmean(r["loss"] for r in rows.values()),
        "per_class": per_class,
        "confusion_matrix": rows[seed]["confusion_matrix"],
        "per_seed": {str(s): r["accuracy"] for s, r in rows.items()},
    }
