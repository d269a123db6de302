"""What a trial tries: each setting of `search.space` drawn through Optuna's suggest API, as the config values and
the Hydra overrides its training runs get.

A setting is `{key, type: float|int|categorical, low, high, log, step, choices, digits}`; `digits` rounds a drawn
float to that many significant digits (a learning rate of 0.00042, not 0.000421937), and the rounded value is the
one trained with, recorded and applied.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

STEP_DECIMALS = 10


def _rounded(value: float, digits: int | None) -> float:
    return float(f"{value:.{digits}g}") if digits else value


def suggest(trial: optuna.Trial, space: DictConfig) -> dict[str, Any]:
    """The trial's value of each searched config key (`optimizer.learning_rate` → 0.00042)."""
    values: dict[str, Any] = {}
    for name, spec in space.items():
        if spec.type == "categorical":
            choices = OmegaConf.to_container(spec.choices)
            values[spec.key] = trial.suggest_categorical(name, choices)
        elif spec.type == "int":
            step = spec.get("step") or 1
            values[spec.key] = trial.suggest_int(name, spec.low, spec.high, step=step, log=bool(spec.get("log")))
        else:
            drawn = trial.suggest_float(name, spec.low, spec.high, step=spec.get("step"), log=bool(spec.get("log")))
            # A stepped float lands on the grid (0.3, not 0.30000000000000004).
            values[spec.key] = round(drawn, STEP_DECIMALS) if spec.get("step") else _rounded(drawn, spec.get("digits"))
    return values


def as_override(key: str, value: Any) -> str:
    """`key=value` as Hydra parses it back to the same value (floats in full, strings as they are)."""
    if isinstance(value, float):
        return f"{key}={value!r}"
    if value is None or isinstance(value, bool):
        return f"{key}={str(value).lower() if value is not None else 'null'}"
    return f"{key}={value}"


def overrides(values: dict[str, Any]) -> list[str]:
    return [as_override(k, v) for k, v in values.items()]


def digest(variant: str, values: dict[str, Any], inherited: list[str]) -> str:
    """Eight hex digits naming a trial's settings: the same settings (a trial retried after a kill) give the same
    run names, so their seeds' checkpoints resume."""
    text = json.dumps([variant, sorted(values.items()), sorted(inherited)], default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]
