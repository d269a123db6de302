"""Training throughput (images/s) of each study variant through three input pipelines, checked against targets.

project: the project's cached uint8 split served by `catdog.dataset.batches`. reference: the original study's
`image_dataset_from_directory`, decoding the JPEGs every epoch, and for CNN models a float64 first Conv2D.
bound: the project's model stepping over one float32 batch already in memory, i.e. the compute bound.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import queue
import re
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
from omegaconf import DictConfig
from tqdm import tqdm

from catdog.dataset import Split, batches, load_split
from catdog.files import write_text
from catdog.models import NET, build_model
from catdog.study import compose_config
from catdog.phases import compile_model, make_optimizer
from catdog.training import seed_everything

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("baseline", "augmented", "scaled", "transfer")
PIPELINES = ("project", "reference", "bound")
TARGETS = {
    "min_project_over_reference": 2.5,  # CNN variants only
    "min_project_over_bound": 0.9,
    "max_rss_mib": 4096.0,
    "max_study_wall_s": 15 * 60.0,
}
GNU_TIME_WALL = re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)")
GNU_TIME_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")


@dataclass(frozen=True)
class Feed:
    """An input pipeline repeating forever, and how many images one pass over it holds."""

    dataset: tf.data.Dataset
    images_per_pass: int


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--steps", type=positive_int, help="timed steps per cell (default: one epoch of train)")
    parser.add_argument("--warmup-steps", type=positive_int, default=10, help="untimed steps per cell (default: 10)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="interleaved runs per cell, best kept (default: 3)")
    parser.add_argument("--image-size", type=positive_int, help="override every variant's trainer.image_size")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="[VARIANT:]KEY=VALUE",
        help="Hydra override for every variant, or for one with a VARIANT: prefix (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="folder for the JSON and table")
    parser.add_argument("--repro-log", type=Path, help="GNU `/usr/bin/time -v` log of a full `dvc repro`")
    return parser.parse_args(argv)


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


def data_path(cfg: DictConfig, key: str) -> Path:
    """A configured data path, taken relative to the repository root."""
    return ROOT / cfg.data[key]


def is_cnn(cfg: DictConfig) -> bool:
    """Whether the variant trains the study's small CNN (the float64 conv and the a/b target apply)."""
    return cfg.model.name == "cnn"


def train_split(cfg: DictConfig) -> Split:
    """The train split through the project's decode-once cache."""
    manifest, classes, size = data_path(cfg, "split_dir") / "train.csv", list(cfg.data.classes), cfg.trainer.image_size
    return load_split(manifest, data_path(cfg, "dataset_dir"), classes, size, data_path(cfg, "cache_dir"))


def feeds(cfg: DictConfig, split: Split) -> dict[str, Feed]:
    """The three input pipelines of one variant."""
    size, batch = cfg.trainer.image_size, cfg.trainer.batch_size
    reference = keras.utils.image_dataset_from_directory(
        data_path(cfg, "dataset_dir") / cfg.data.train_folder,
        image_size=(size, size),
        batch_size=batch,
        seed=cfg.seed,
        verbose=False,
    )
    one_batch = (split.images[:batch].astype("float32"), split.labels[:batch])
    return {
        "project": Feed(batches(split, batch, shuffle=True, seed=cfg.seed).repeat(), len(split.labels)),
        "reference": Feed(reference.repeat(), len(reference.file_paths)),
        "bound": Feed(tf.data.Dataset.from_tensors(one_batch).repeat(), batch),
    }


def float64_first_conv(model: keras.Model) -> keras.Model:
    """A fresh copy of `model` whose net's first Conv2D runs in float64 (Keras casts its inputs to match)."""
    first = next(layer for layer in model.get_layer(NET).layers if isinstance(layer, keras.layers.Conv2D))

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        return layer.__class__.from_config({**config, "dtype": "float64"} if layer is first else config)

    return keras.models.clone_model(model, clone_function=clone, recursive=True)


def pipeline_model(cfg: DictConfig, pipeline: str, steps: int) -> keras.Model:
    """A freshly built and compiled model for `pipeline`: the project's, or its float64 twin for the reference CNN."""
    keras.backend.clear_session()
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


def images_seen(steps: int, images_per_pass: int, batch_size: int) -> int:
    """Images in the first `steps` batches of repeated passes whose last batch may be short."""
    passes, rest = divmod(steps, math.ceil(images_per_pass / batch_size))
    return passes * images_per_pass + rest * batch_size


def measure(cfg: DictConfig, pipeline: str, feed: Feed, steps: int, warmup_steps: int) -> dict[str, float]:
    """Train one (variant, pipeline) cell and return its images, seconds and images/s."""
    seconds = timed_fit(pipeline_model(cfg, pipeline, warmup_steps + steps), feed.dataset, steps, warmup_steps)
    images = images_seen(steps, feed.images_per_pass, cfg.trainer.batch_size)
    return {"images": images, "seconds": round(seconds, 3), "images_per_s": round(images / seconds, 2)}


def run_variant(variant: str, args: argparse.Namespace, on_cell: Callable[[str], None]) -> dict[str, Any]:
    """Measure one variant through every pipeline, interleaved `--repeats` times; keep each pipeline's best run.

    On a shared 2-core VM one fit can run at half the speed of the next for reasons outside the process, so a
    single timing per pipeline compares noise; the best of several interleaved runs compares the pipelines.
    """
    cfg = variant_config(variant, args)
    split = train_split(cfg)
    steps = args.steps or math.ceil(len(split.labels) / cfg.trainer.batch_size)
    cells: dict[str, dict[str, float]] = {}
    for _ in range(args.repeats):
        for pipeline, feed in feeds(cfg, split).items():
            cell = measure(cfg, pipeline, feed, steps, args.warmup_steps)
            if cell["images_per_s"] > cells.get(pipeline, {}).get("images_per_s", 0):
                cells[pipeline] = cell
            on_cell(f"{variant}/{pipeline}")
    return summarize(cfg, steps, args.warmup_steps, cells)


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
                raise SystemExit(f"the benchmark of {variant} died (exit code {child.exitcode}); see its output above")
            continue
        if kind == "done":
            child.join()
            return payload
        bar.set_postfix_str(payload)
        bar.update()


def summarize(cfg: DictConfig, steps: int, warmup_steps: int, cells: dict[str, dict[str, float]]) -> dict[str, Any]:
    """One variant's settings, cells, a/b and a/c ratios and their pass/fail (a/b only for CNN models)."""
    a_b = cells["project"]["images_per_s"] / cells["reference"]["images_per_s"]
    a_c = cells["project"]["images_per_s"] / cells["bound"]["images_per_s"]
    return {
        "model": cfg.model.name,
        "image_size": cfg.trainer.image_size,
        "batch_size": cfg.trainer.batch_size,
        "steps": steps,
        "warmup_steps": warmup_steps,
        "reference_float64_first_conv": is_cnn(cfg),
        "pipelines": cells,
        "project_over_reference": round(a_b, 3),
        "project_over_bound": round(a_c, 3),
        "pass_project_over_reference": a_b >= TARGETS["min_project_over_reference"] if is_cnn(cfg) else None,
        "pass_project_over_bound": a_c >= TARGETS["min_project_over_bound"],
    }


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


def clock_seconds(text: str) -> float:
    """Seconds in GNU time's `h:mm:ss` or `m:ss.ss`."""
    return sum(float(part) * 60**i for i, part in enumerate(reversed(text.split(":"))))


def repro_stats(path: Path) -> dict[str, float]:
    """Wall time and maximum RSS of `dvc repro` from a GNU `/usr/bin/time -v` log (its last report)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    wall, rss = GNU_TIME_WALL.findall(text), GNU_TIME_RSS.findall(text)
    if not (wall and rss):
        raise SystemExit(f"{path}: no GNU `/usr/bin/time -v` report (wall clock time and maximum RSS) found")
    return {"wall_s": round(clock_seconds(wall[-1]), 2), "max_rss_mib": round(int(rss[-1]) / 1024, 1)}


def process_summary(variants: dict[str, dict[str, Any]], repro: dict[str, float] | None) -> dict[str, Any]:
    """The largest variant process's peak RSS and the optional `dvc repro` figures, each with its pass/fail."""
    rss = max(v["peak_rss_mib"] for v in variants.values())
    summary = {"peak_rss_mib": round(rss, 1), "pass_peak_rss": rss <= TARGETS["max_rss_mib"], "repro": repro}
    if repro:
        summary["pass_repro_wall"] = repro["wall_s"] <= TARGETS["max_study_wall_s"]
        summary["pass_repro_rss"] = repro["max_rss_mib"] <= TARGETS["max_rss_mib"]
    return summary


def device_name() -> str:
    """The GPUs TensorFlow sees, or `CPU` with its core count."""
    gpus = tf.config.list_physical_devices("GPU")
    names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
    return ", ".join(names) or f"CPU ({os.cpu_count()} cores)"


def meta(args: argparse.Namespace) -> dict[str, Any]:
    """When, where and how the benchmark ran."""
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "device": device_name(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "overrides": args.override,
    }


def verdict(passed: bool | None) -> str:
    """A pass/fail cell."""
    return "n/a" if passed is None else ("pass" if passed else "**FAIL**")


def table_row(cells: list[Any]) -> str:
    """One Markdown table row."""
    return "| " + " | ".join(map(str, cells)) + " |"


def variant_row(name: str, v: dict[str, Any]) -> str:
    """One variant's row of the throughput table."""
    rates = [f"{v['pipelines'][p]['images_per_s']:.1f}" for p in PIPELINES]
    reference = "float64 conv" if v["reference_float64_first_conv"] else "project model"
    return table_row(
        [name, v["model"], v["image_size"], v["batch_size"], v["steps"], *rates, reference, f"{v['peak_rss_mib']:.0f}"]
        + [f"{v['project_over_reference']:.2f}", verdict(v["pass_project_over_reference"])]
        + [f"{v['project_over_bound']:.2f}", verdict(v["pass_project_over_bound"])]
    )


def process_rows(p: dict[str, Any]) -> list[str]:
    """Rows of the memory and wall-time table; the `dvc repro` ones say so when no log was given."""
    rss_limit = f"≤ {TARGETS['max_rss_mib']:.0f} MiB"
    wall_limit = f"≤ {TARGETS['max_study_wall_s'] / 60:.0f} min"
    rows = [["benchmark peak RSS (largest variant)", f"{p['peak_rss_mib']:.0f} MiB", rss_limit, verdict(p["pass_peak_rss"])]]
    repro = p["repro"]
    if repro is None:
        rows += [
            [f"`dvc repro` {measure}", "—", limit, "not measured (`--repro-log`)"]
            for measure, limit in (("wall time", wall_limit), ("max RSS", rss_limit))
        ]
    else:
        minutes, seconds = divmod(repro["wall_s"], 60)
        rows += [
            ["`dvc repro` wall time", f"{minutes:.0f}:{seconds:04.1f}", wall_limit, verdict(p["pass_repro_wall"])],
            ["`dvc repro` max RSS", f"{repro['max_rss_mib']:.0f} MiB", rss_limit, verdict(p["pass_repro_rss"])],
        ]
    return [table_row(row) for row in rows]


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown: one row per variant, then memory and wall time against their targets."""
    m = results["meta"]
    t = TARGETS
    lines = [
        "# Training throughput (images/s)",
        "",
        f"{m['created']} · {m['device']} · TensorFlow {m['tensorflow']} · Keras {m['keras']} · `{m['command']}`",
        "",
        f"| variant | model | size | batch | steps | a: project | b: reference | c: bound | b's model | peak RSS MiB "
        f"| a/b | a/b ≥ "
        f"{t['min_project_over_reference']} | a/c | a/c ≥ {t['min_project_over_bound']} |",
        "|---|---|--:|--:|--:|--:|--:|--:|---|--:|--:|---|--:|---|",
        *(variant_row(name, v) for name, v in results["variants"].items()),
        "",
        "| measure | value | target | result |",
        "|---|--:|---|---|",
        *process_rows(results["process"]),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write `throughput.json` and `throughput.md` to `--out`."""
    args = parse_args(argv)
    repro = repro_stats(args.repro_log) if args.repro_log else None
    with tqdm(total=len(args.variants) * len(PIPELINES) * args.repeats, desc="throughput", unit="cell") as bar:
        variants = {variant: run_isolated(variant, args, bar) for variant in args.variants}
    results = {"meta": meta(args), "targets": TARGETS, "variants": variants, "process": process_summary(variants, repro)}
    write_text(args.out / "throughput.json", json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    write_text(args.out / "throughput.md", table)
    print(table)


if __name__ == "__main__":
    main()
