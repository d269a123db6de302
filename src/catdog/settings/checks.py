"""The config checks: every value a run reads, refused with its key and what is allowed before any data is read."""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig

from catdog.common.errors import UserError

PREPROCESS_OPTIONS = ("none", "mobilenet_v2")
LR_SCHEDULES = ("constant", "cosine")
OUTPUTS = ("adhoc", "study")
PRECISIONS = ("float32", "bfloat16", "auto")
ONEDNN_SETTINGS = ("auto", "on", "off")
MIN_IMAGE_SIZE = 32


class ConfigError(UserError, ValueError):
    """A config value is out of its allowed range; the message names the key and what is allowed."""

    kind = "config error"
    exit_code = 2


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _distinct(values: Any, ok: Callable[[Any], bool]) -> bool:
    items = list(values) if isinstance(values, (list, tuple, ListConfig)) else None
    return bool(items) and len(set(map(str, items))) == len(items) and all(map(ok, items))


def _is_sha256_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{64}", value) is not None)


def _is_exclusion(entry: Any) -> bool:
    """`{path: ..., reason: ...}`, both non-empty strings (a file `data.exclude` leaves out, and why)."""
    keys = set(entry.keys()) if isinstance(entry, (dict, DictConfig)) else set()
    return keys == {"path", "reason"} and all(isinstance(entry[k], str) and entry[k].strip() for k in keys)


CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "study.seeds": (
        lambda v: _distinct(v, lambda s: _is_int(s) and s >= 0),
        "a non-empty list of distinct integers >= 0",
    ),
    "study.variants": (
        lambda v: _distinct(v, lambda s: isinstance(s, str) and s != ""),
        "a non-empty list of distinct names",
    ),
    "data.split_seed": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "data.test_fraction": (lambda v: _is_number(v) and 0 < v < 1, "a number strictly between 0 and 1"),
    "data.min_holdout_per_class": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "data.max_pixels": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "data.content_sha256": (_is_sha256_or_none, "64 hex digits, or null (no check)"),
    "data.archive_sha256": (_is_sha256_or_none, "64 hex digits, or null (no check)"),
    "data.exclude": (
        lambda v: isinstance(v, (list, ListConfig)) and all(map(_is_exclusion, v)),
        "a list of {path, reason}, each a non-empty string",
    ),
    "trainer.epochs": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "trainer.batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "trainer.image_size": (lambda v: _is_int(v) and v >= MIN_IMAGE_SIZE, f"an integer >= {MIN_IMAGE_SIZE}"),
    "trainer.early_stopping.patience": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "optimizer.learning_rate": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "trainer.lr_schedule": (lambda v: v in LR_SCHEDULES, f"one of {', '.join(LR_SCHEDULES)}"),
    "trainer.steps_per_execution": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "trainer.ema_momentum": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1); 0 turns averaging off"),
    "model.preprocess": (lambda v: v in PREPROCESS_OPTIONS, f"one of {', '.join(PREPROCESS_OPTIONS)}"),
    "trainer.outputs": (lambda v: v in OUTPUTS, f"one of {', '.join(OUTPUTS)}"),
    "trainer.threads": (lambda v: v == "auto" or (_is_int(v) and v >= 1), "auto, or an integer >= 1"),
    "trainer.precision": (lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
    "trainer.onednn": (lambda v: v in ONEDNN_SETTINGS, f"one of {', '.join(ONEDNN_SETTINGS)}"),
}


def _lookup(cfg: DictConfig, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def validate(cfg: DictConfig) -> None:
    """Refuse out-of-range values before any data is read or any run is opened."""
    problems = []
    for key, (ok, allowed) in CHECKS.items():
        value = _lookup(cfg, key)
        if not ok(value):
            problems.append(f"{key}: got {value!r}; expected {allowed}")
    if cfg.model.get("cache_features") and cfg.augment.enabled:
        problems.append("model.cache_features: got true with augment=on; cached features need augment=off")
    if problems:
        raise ConfigError("\n".join(problems))
