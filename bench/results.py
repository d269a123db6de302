"""The benchmark's targets, and its results as JSON-ready dicts: each variant's cells and ratios, the processes'
memory and the study's wall time, each with its pass/fail, and when, where and how it ran.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from typing import Any

import keras
import tensorflow as tf
from omegaconf import DictConfig
from plan import is_cnn

from catdog.train.precision import native_bf16

TARGETS = {
    "min_project_over_reference": 2.5,  # CNN variants only, a in the study's precision
    "min_project_over_bound": 0.9,  # c in a's precision
    "max_rss_mib": 4096.0,
    "max_study_wall_s": 15 * 60.0,  # one `--repro-log`
    "max_study_wall_ratio": 0.75,  # `--repro-log` over `--baseline-repro-log`
}


def summarize(
    cfg: DictConfig, steps: int, warmup_steps: int, cells: dict[str, dict[str, Any]], precision: dict[str, str]
) -> dict[str, Any]:
    """One variant's settings, cells, ratios and their pass/fail (a/b only for CNN models). `precision` is the
    project cell's (`plan.project_precision`); a/c compares with the bound in that precision."""
    rate = {cell: timing["images_per_s"] for cell, timing in cells.items()}
    a_b = rate["project"] / rate["reference"]
    a_c = rate["project"] / rate[f"bound_{precision['resolved']}"]
    return {
        "model": cfg.model.name,
        "image_size": cfg.trainer.image_size,
        "batch_size": cfg.trainer.batch_size,
        "steps": steps,
        "warmup_steps": warmup_steps,
        "project_precision": precision,
        "reference_float64_first_conv": is_cnn(cfg),
        "pipelines": cells,
        "bound_bfloat16_over_float32": round(rate["bound_bfloat16"] / rate["bound_float32"], 3),
        "project_over_reference": round(a_b, 3),
        "project_over_bound": round(a_c, 3),
        "pass_project_over_reference": a_b >= TARGETS["min_project_over_reference"] if is_cnn(cfg) else None,
        "pass_project_over_bound": a_c >= TARGETS["min_project_over_bound"],
    }


def process_summary(
    variants: dict[str, dict[str, Any]], repro: dict[str, float] | None, baseline: dict[str, float] | None = None
) -> dict[str, Any]:
    """The largest variant process's peak RSS and the optional `dvc repro` figures, each with its pass/fail.

    With one log the study's wall time is judged against `max_study_wall_s`; with a `baseline` log too (the study
    before, timed in the same sitting) it is judged as the ratio after/before against `max_study_wall_ratio`.
    """
    rss = max(v["peak_rss_mib"] for v in variants.values())
    summary = {"peak_rss_mib": round(rss, 1), "pass_peak_rss": rss <= TARGETS["max_rss_mib"], "repro": repro}
    if repro:
        summary["pass_repro_rss"] = repro["max_rss_mib"] <= TARGETS["max_rss_mib"]
        summary["pass_repro_wall"] = repro["wall_s"] <= TARGETS["max_study_wall_s"]
    if repro and baseline:
        ratio = repro["wall_s"] / baseline["wall_s"]
        summary["baseline_repro"] = baseline
        summary["repro_wall_ratio"] = round(ratio, 3)
        summary["pass_repro_wall"] = ratio <= TARGETS["max_study_wall_ratio"]
    return summary


def device_name() -> str:
    """The GPUs TensorFlow sees, or `CPU` with its core count."""
    gpus = tf.config.list_physical_devices("GPU")
    names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    return ", ".join(names) or f"CPU ({os.cpu_count()} cores)"


def meta(args: argparse.Namespace) -> dict[str, Any]:
    """When, where and how the benchmark ran; `native_bfloat16` names what computes bfloat16 natively (None: the
    bfloat16 cells ran emulated)."""
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "device": device_name(),
        "native_bfloat16": native_bf16(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "precision": args.precision,
        "overrides": args.override,
    }
