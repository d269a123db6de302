"""The study's settings: params.yaml holds the knobs DVC tracks, and conf/ reads them as `${params:key}`."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from catdog.settings.checks import ConfigError
from catdog.settings.project import params_file

CONFIG_NAME = "config"
RESOLVER = "params"


def study_run(variant: str, seed: int) -> str:
    """One study run's name: its DVC stage's key (train@baseline-42), its MLflow run's and its outputs' folder's."""
    return f"{variant}-{seed}"


@functools.lru_cache(maxsize=8)
def _read_params(path: Path, mtime_ns: int, size: int) -> DictConfig:
    """params.yaml as it is on disk now (keyed by its modification time and size): one composition resolves dozens
    of `${params:...}`, which read it once instead of once each (2.5 s of a tiny training's 12)."""
    return OmegaConf.load(path)


def study_param(key: str) -> Any:
    """The value at dotted `key` in params.yaml, or an error naming the file and the key."""
    path = params_file()
    if not path.is_file():
        raise ConfigError(f"{path}: not found; conf/ reads the study's settings `${{{RESOLVER}:{key}}}` from it")
    stat = path.stat()
    value = OmegaConf.select(_read_params(path.resolve(), stat.st_mtime_ns, stat.st_size), key, default=None)
    if value is None:
        raise ConfigError(f"{path}: no `{key}`, which conf/ reads as `${{{RESOLVER}:{key}}}`; add it there")
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def register_resolver() -> None:
    """Let conf/ say `${params:variants.baseline.trainer.epochs}` (idempotent)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, study_param)


def compose_config(conf_dir: Path, overrides: list[str] | None = None, *, hydra_config: bool = False) -> DictConfig:
    """The config Hydra would compose for these overrides, outside of any Hydra app."""
    with initialize_config_dir(config_dir=str(conf_dir.resolve()), version_base="1.3"):
        return compose(CONFIG_NAME, overrides=overrides or [], return_hydra_config=hydra_config)


def composed_files(conf_dir: Path, overrides: list[str] | None = None) -> list[Path]:
    """The config files a composition reads: the root config and the chosen option of each group."""
    choices = compose_config(conf_dir, overrides, hydra_config=True).hydra.runtime.choices
    groups = sorted(g for g, option in choices.items() if option and not g.startswith("hydra"))
    return [conf_dir / f"{CONFIG_NAME}.yaml", *(conf_dir / g / f"{choices[g]}.yaml" for g in groups)]
