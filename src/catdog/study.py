"""The study's knobs as DVC params: params.yaml is generated from conf/, never edited by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

CONFIG_NAME = "config"
HEADER = (
    "# Generated from conf/ by `python src/params.py`; do not edit. Change a default in conf/ and regenerate,\n"
    "# or vary one experiment with `dvc exp run -S variants.baseline.trainer.epochs=5`.\n"
)


def compose_config(conf_dir: Path, overrides: list[str] | None = None) -> DictConfig:
    """The config Hydra would compose for these overrides, outside of any Hydra app."""
    with initialize_config_dir(config_dir=str(conf_dir.resolve()), version_base="1.3"):
        return compose(CONFIG_NAME, overrides=overrides or [])


def _nest(cfg: DictConfig, knobs: list[str]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for knob in knobs:
        *parents, leaf = knob.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = OmegaConf.select(cfg, knob, throw_on_missing=True)
    return nested


def study_params(conf_dir: Path) -> dict[str, Any]:
    """Shared knobs from the root config, and each variant's knobs from its composed config."""
    root = compose_config(conf_dir)
    params = _nest(root, list(root.study.shared_knobs))
    knobs = list(root.study.variant_knobs)
    params["variants"] = {v: _nest(compose_config(conf_dir, [f"variant={v}"]), knobs) for v in root.study.variants}
    return params


def render(params: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(params, sort_keys=False)
