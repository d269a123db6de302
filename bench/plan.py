"""What the throughput benchmark runs: each variant's composed config, the precision of its cells, and the cells;
and the machine as the benchmarks name it (`machine`: profile.py, auto_precision.py).

A variant's cells: a (project) in the precision the study trains it in, or the one `--precision` forces; b
(reference) in float32, as the original study ran; and c (bound) in both float32 and bfloat16.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from omegaconf import DictConfig

from catdog.common.machine import cpu_flags, cpu_model, cpuinfo_field
from catdog.settings.params import compose_config
from catdog.train.autoprecision import choose
from catdog.train.precision import resolve

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("baseline", "augmented", "scaled", "transfer")
PRECISIONS = ("float32", "bfloat16")
PRECISION_CHOICES = ("study", *PRECISIONS)
# Each cell of a variant: its input pipeline (a `feeds.feeds` key), and its precision (None: the project's).
CELLS: dict[str, tuple[str, str | None]] = {
    "project": ("project", None),
    "reference": ("reference", "float32"),
    "bound_float32": ("bound", "float32"),
    "bound_bfloat16": ("bound", "bfloat16"),
}


def overrides_for(variant: str, overrides: list[str]) -> list[str]:
    """The overrides that apply to `variant`: unscoped ones, and those prefixed `variant:`."""
    chosen = []
    for item in overrides:
        scope, colon, override = item.partition(":")
        if not (colon and scope in VARIANTS):
            chosen.append(item)
        elif scope == variant:
            chosen.append(override)
    return chosen


def variant_config(variant: str, args: argparse.Namespace) -> DictConfig:
    """The composed config of `variant` with the command line's overrides."""
    size = [f"trainer.image_size={args.image_size}"] if args.image_size else []
    return compose_config(ROOT / "conf", [f"variant={variant}", *overrides_for(variant, args.override), *size])


def is_cnn(cfg: DictConfig) -> bool:
    """Whether the variant trains the study's small CNN (the float64 conv and the a/b target apply)."""
    return cfg.model.name == "cnn"


def project_precision(cfg: DictConfig, forced: str) -> dict[str, str]:
    """The precision of the project's cell: the setting (the study's `trainer.precision`, or `forced` unless it is
    `study`), where it came from, and what it resolves to on this machine (float32 or bfloat16; auto measured,
    as a run measures it)."""
    setting, source = (cfg.trainer.precision, "study") if forced == "study" else (forced, "--precision")
    resolved = choose(cfg).precision if setting == "auto" else resolve(setting)
    return {"setting": setting, "source": source, "resolved": resolved}


def cell_precisions(project: str) -> dict[str, str]:
    """Every cell's precision, the project's being `project` (resolved: float32 or bfloat16)."""
    return {cell: resolve(precision) if precision else project for cell, (_, precision) in CELLS.items()}


def machine() -> dict:
    """The CPU as `/proc/cpuinfo` names it, with family/model/stepping and its bfloat16 flags; cores, TensorFlow."""
    import tensorflow as tf

    ids = "/".join(cpuinfo_field((f,)) or "?" for f in ("cpu family", "model", "stepping"))
    flags = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16"})
    return {
        "cpu": cpu_model(),
        "family_model_stepping": ids,
        "bf16_flags": flags,
        "cores": len(os.sched_getaffinity(0)),
        "tensorflow": tf.__version__,
    }
