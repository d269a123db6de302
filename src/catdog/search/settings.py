"""The search's own settings (`search:` in conf/search.yaml and conf/hparams_search/), checked before anything runs,
and which of the search command's overrides its trials' training commands inherit."""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from catdog.common.errors import UserError
from catdog.settings.project import params_file as project_params_file

SPACE_TYPES = ("float", "int", "categorical")
# The search command's overrides that say what the search is, not how its trials train.
OWN_KEYS = ("hparams_search", "search", "variant", "name", "seed", "trainer.outputs")


class SearchError(UserError):
    """A search setting is wrong, or the search cannot go on: the message names the setting and what to do."""

    kind = "search error"
    exit_code = 2


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check(search: DictConfig) -> None:
    """Refuse a search whose seeds, budget or space are out of range, naming each key."""
    problems = []
    seeds = list(search.seeds)
    if len(set(map(str, seeds))) != len(seeds) or not all(_is_int(s) and s >= 0 for s in seeds):
        problems.append(f"search.seeds: got {seeds}; expected distinct integers >= 0")
    if len(seeds) < search.min_seeds:
        problems.append(
            f"search.seeds: got {len(seeds)} seeds; a mean over seeds needs at least {search.min_seeds} "
            "(search.min_seeds)"
        )
    for key in ("n_trials", "seeds_at_once"):
        if not (_is_int(search[key]) and search[key] >= 1):
            problems.append(f"search.{key}: got {search[key]!r}; expected an integer >= 1")
    if not (isinstance(search.poll_s, numbers.Real) and search.poll_s > 0):
        problems.append(f"search.poll_s: got {search.poll_s!r}; expected seconds > 0")
    timeout = search.timeout_min
    if timeout is not None and not (isinstance(timeout, numbers.Real) and timeout > 0):
        problems.append(f"search.timeout_min: got {timeout!r}; expected minutes > 0, or null")
    if not search.space:
        problems.append("search.space: empty; name at least one setting to search")
    for name, spec in search.space.items():
        problems += _space_problems(name, spec)
    if problems:
        raise SearchError("\n".join(problems))


def _space_problems(name: str, spec: DictConfig) -> list[str]:
    where = f"search.space.{name}"
    if not spec.get("key"):
        return [f"{where}.key: missing; the config key it sets, e.g. optimizer.learning_rate"]
    kind = spec.get("type")
    if kind not in SPACE_TYPES:
        return [f"{where}.type: got {kind!r}; expected one of {', '.join(SPACE_TYPES)}"]
    if kind == "categorical":
        return [] if spec.get("choices") else [f"{where}.choices: missing or empty"]
    low, high = spec.get("low"), spec.get("high")
    if not (isinstance(low, numbers.Real) and isinstance(high, numbers.Real) and low < high):
        return [f"{where}: low {low!r} and high {high!r}; expected numbers with low < high"]
    if spec.get("log") and low <= 0:
        return [f"{where}.low: got {low!r}; a log scale needs low > 0"]
    return []


def params_file(search: DictConfig) -> Path:
    """The params.yaml the search checks its keys in and `apply` writes: the study's unless search.params_file."""
    return Path(search.params_file) if search.get("params_file") else project_params_file()


def params_key(variant: str, key: str) -> str:
    """The params.yaml key a searched config key lives under: conf/variant/<v>.yaml reads it from there."""
    return f"variants.{variant}.{key}"


def check_params_keys(search: DictConfig) -> None:
    """Every searched key must be one of the variant's settings in params.yaml, so that `apply` can write it."""
    path = params_file(search)
    params = OmegaConf.load(path)
    missing = [
        params_key(search.variant, spec.key)
        for spec in search.space.values()
        if OmegaConf.select(params, params_key(search.variant, spec.key), default=None) is None
    ]
    if missing:
        raise SearchError(
            f"{path}: no {', '.join(missing)}; a search may only vary the variant's settings there (conf/variant/"
            f"{search.variant}.yaml reads them), so that its best trial can be applied"
        )


def _key(override: str) -> str:
    """The key (or group) an override sets: `+trainer.x=1` → trainer.x, `hydra/launcher=joblib` → hydra/launcher."""
    return override.split("=", 1)[0].lstrip("+~")


def _owned(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith((p + ".", p + "/")) for p in prefixes)


def inherited(task: list[str], space: DictConfig) -> list[str]:
    """The search command's overrides its trials train with: all but the search's own keys (its seeds, name and
    variant come from the search's settings); a searched key set there too is refused."""
    kept = [o for o in task if not _owned(_key(o), OWN_KEYS)]
    searched = {spec.key for spec in space.values()}
    clash = [o for o in kept if _key(o) in searched]
    if clash:
        raise SearchError(
            f"{', '.join(clash)}: searched by search.space; leave it to the search, or take it out of the space "
            "(`~search.space.<name>`)"
        )
    return kept


def launcher(hydra: list[str]) -> list[str]:
    """The search command's launcher choice and settings (`hydra/launcher=joblib hydra.launcher.n_jobs=2`), which
    run each trial's seeds."""
    return [o for o in hydra if _owned(_key(o), ("hydra/launcher", "hydra.launcher"))]
