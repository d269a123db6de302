"""Config checks and project paths shared by every entry point."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

PREPROCESS_OPTIONS = ("none", "mobilenet_v2")
LR_SCHEDULES = ("constant", "cosine")
MIN_IMAGE_SIZE = 32
EXPERIMENT_TEMP_DIR = (".dvc", "tmp", "exps")


class ConfigError(ValueError):
    """A config value is out of its allowed range; the message names the key and what is allowed."""


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "data.split_seed": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "data.test_fraction": (lambda v: _is_number(v) and 0 < v < 1, "a number strictly between 0 and 1"),
    "trainer.epochs": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "trainer.batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "trainer.image_size": (lambda v: _is_int(v) and v >= MIN_IMAGE_SIZE, f"an integer >= {MIN_IMAGE_SIZE}"),
    "trainer.early_stopping.patience": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "optimizer.learning_rate": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "trainer.lr_schedule": (lambda v: v in LR_SCHEDULES, f"one of {', '.join(LR_SCHEDULES)}"),
    "trainer.steps_per_execution": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "trainer.ema_momentum": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1); 0 turns averaging off"),
    "model.preprocess": (lambda v: v in PREPROCESS_OPTIONS, f"one of {', '.join(PREPROCESS_OPTIONS)}"),
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
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def project_root(start: Path | None = None) -> Path:
    """The repository holding dvc.yaml; from inside a DVC temporary experiment, the repository that launched it."""
    here = (start or Path.cwd()).resolve()
    root = next((p for p in (here, *here.parents) if (p / "dvc.yaml").is_file()), here)
    parts = root.parts
    for i in range(len(parts) - len(EXPERIMENT_TEMP_DIR)):
        if parts[i : i + len(EXPERIMENT_TEMP_DIR)] == EXPERIMENT_TEMP_DIR:
            return Path(*parts[:i])
    return root
