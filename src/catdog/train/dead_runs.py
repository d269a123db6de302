"""Dead runs, named: a training whose val accuracy never rose above the majority-class interval for its whole
patience did not learn (it predicts one class, as the study's baseline did with seed 1), whatever its number says.

The majority-class interval is the 95% Wilson interval of always guessing the train split's majority class on the
val split: on the study's 500 val images 45.6–54.4%, on the tests' 8 images 21.5–78.5%. A run is dead when it ran
at least its patience (early stopping's, else all its epochs) and its best val accuracy is within (or below) that
interval. A run stopped by its epoch budget before its patience was spent has not had the time to leave it, and is
not called dead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from catdog.common.intervals import accuracy_interval

TAG = "did_not_learn"
METRIC = "did_not_learn"
WHAT = "val accuracy never rose above the majority-class interval for its whole patience"


def majority_interval(train_labels: np.ndarray, val_labels: np.ndarray) -> tuple[float, float]:
    """The 95% Wilson interval of the accuracy on val of always guessing the train split's majority class (ties:
    the first class)."""
    majority = int(np.argmax(np.bincount(np.asarray(train_labels))))
    right = int((np.asarray(val_labels) == majority).sum())
    return accuracy_interval(right, len(val_labels))


def did_not_learn(val_accuracy: Sequence[float], patience: int | None, interval: tuple[float, float]) -> bool:
    """Whether a run with this val accuracy per epoch was dead: it ran at least `patience` epochs (None: early
    stopping off, so all of them count) and never rose above `interval`."""
    if not val_accuracy:
        return False
    return len(val_accuracy) >= (patience or 1) and max(val_accuracy) <= interval[1]
