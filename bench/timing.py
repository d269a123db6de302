"""Timing the cells: a fresh model per cell in its precision, an untimed warm-up fit then a timed one, each variant
in its own child process that reports its peak RSS.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import queue
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf
from feeds import Feed, feeds, images_seen, train_split
from omegaconf import DictConfig
from plan import CELLS, cell_precisions, is_cnn, project_precision, variant_config
from results import summarize
from tqdm import tqdm

from catdog.train.fit import compile_model, make_optimizer
from catdog.train.models import NET, build_model
from catdog.train.precision import policy
from catdog.train.run import seed_everything


def float64_first_conv(model: keras.Model) -> keras.Model:
    """A fresh copy of `model` whose net's first Conv2D runs in float64 (Keras casts its inputs to match)."""
    first = next(layer for layer in model.get_layer(NET).layers if isinstance(layer, keras.layers.Conv2D))

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        return layer.__class__.from_config({**config, "dtype": "float64"} if layer is first else config)

    return keras.models.clone_model(model, clone_function=clone, recursive=True)


def pipeline_model(cfg: DictConfig, pipeline: str, steps: int) -> keras.Model:
    """A freshly built and compiled model for `pipeline` under the current dtype policy: the project's, or its
    float64 twin for the reference CNN."""
    seed_everything(cfg.seed)
    model = build_model(cfg, num_classes=len(cfg.data.classes))
    if pipeline == "reference" and is_cnn(cfg):
        model = float64_first_conv(model)
    compile_model(model, cfg, make_optimizer(cfg, steps))
    return model


def timed_fit(model: keras.Model, dataset: tf.data.Dataset, steps: int, warmup_steps: int) -> float:
    """Seconds `model.fit` takes for `steps` steps after an untimed `warmup_steps` fit; the datasets shuffle."""
    model.fit(dataset, steps_per_epoch=warmup_steps, epochs=1, shuffle=False, verbose=0)
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)
    return time.perf_counter() - start


def measure(
    cfg: DictConfig, pipeline: str, precision: str, feed: Feed, steps: int, warmup_steps: int
) -> dict[str, Any]:
    """Train one cell, `pipeline` in `precision` (float32 or bfloat16), and return its images, seconds, images/s."""
    keras.backend.clear_session()  # before the policy: clearing the session resets Keras' global dtype policy too
    with policy(precision):
        model = pipeline_model(cfg, pipeline, warmup_steps + steps)
        seconds = timed_fit(model, feed.dataset, steps, warmup_steps)
    images = images_seen(steps, feed.images_per_pass, cfg.trainer.batch_size)
    return {
        "precision": precision,
        "images": images,
        "seconds": round(seconds, 3),
        "images_per_s": round(images / seconds, 2),
    }


def run_variant(variant: str, args: argparse.Namespace, on_cell: Callable[[str], None]) -> dict[str, Any]:
    """Measure one variant's cells, interleaved `--repeats` times; keep each cell's best run.

    On a shared 2-core VM one fit can run at half the speed of the next for reasons outside the process, so a
    single timing per cell compares noise; the best of several interleaved runs compares the cells.
    """
    cfg = variant_config(variant, args)
    precision = project_precision(cfg, args.precision)
    precisions = cell_precisions(precision["resolved"])
    split = train_split(cfg)
    steps = args.steps or math.ceil(len(split.labels) / cfg.trainer.batch_size)
    cells: dict[str, dict[str, Any]] = {}
    for _ in range(args.repeats):
        pipelines = feeds(cfg, split)
        for cell, (pipeline, _) in CELLS.items():
            run = measure(cfg, pipeline, precisions[cell], pipelines[pipeline], steps, args.warmup_steps)
            if run["images_per_s"] > cells.get(cell, {}).get("images_per_s", 0):
                cells[cell] = run
            on_cell(f"{variant}/{cell}")
    return summarize(cfg, steps, args.warmup_steps, cells, precision)


def variant_worker(variant: str, args: argparse.Namespace, messages: multiprocessing.Queue) -> None:
    """The child process of one variant: post each finished cell, then the results with this process's peak RSS."""
    result = run_variant(variant, args, lambda cell: messages.put(("cell", cell)))
    messages.put(("done", {**result, "peak_rss_mib": round(peak_rss_mib(), 1)}))


def run_isolated(variant: str, args: argparse.Namespace, bar: tqdm) -> dict[str, Any]:
    """`run_variant` in a fresh process, so that memory one variant leaves behind never counts against the next."""
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    child = context.Process(target=variant_worker, args=(variant, args, messages), name=f"bench-{variant}")
    child.start()
    while True:
        try:
            kind, payload = messages.get(timeout=1)
        except queue.Empty:
            if not child.is_alive():
                raise SystemExit(
                    f"the benchmark of {variant} died (exit code {child.exitcode}); see its output above"
                ) from None
            continue
        if kind == "done":
            child.join()
            return payload
        bar.set_postfix_str(payload)
        bar.update()


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
