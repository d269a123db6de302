"""The audit's own settings (conf/audit.yaml), refused with the key and what is allowed before TensorFlow is
imported, as `catdog.settings.checks` does for the root config's."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from catdog.settings.checks import ConfigError


def _int(low: int, high: int | None = None) -> Callable[[Any], bool]:
    def ok(value: Any) -> bool:
        whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        return whole and value >= low and (high is None or value <= high)

    return ok


CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "backbone.alpha": (lambda v: isinstance(v, float) and v > 0, "MobileNetV2's width"),
    "backbone.weights": (lambda v: v in ("imagenet", None), "`imagenet`, or null (random)"),
    "image_size": (_int(32), "an integer >= 32"),
    "batch_size": (_int(1), "an integer >= 1"),
    "folds": (_int(2), "an integer >= 2"),
    "seed": (_int(0), "an integer >= 0"),
    "near_duplicate_threshold": (
        lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool) and v > 0,
        "a number > 0",
    ),
    "phash_max_bits": (_int(0, 64), "an integer from 0 to 64"),
}


def check(audit: DictConfig) -> None:
    """Refuse out-of-range audit settings, naming every bad key."""
    problems = []
    for key, (ok, allowed) in CHECKS.items():
        value = audit
        for part in key.split("."):
            value = value[part]
        if not ok(value):
            problems.append(f"audit.{key}: got {value!r}; expected {allowed}")
    if problems:
        raise ConfigError("\n".join(problems))
