"""Training throughput (images/s) of each study variant through three input pipelines (a: the project's, b: the
original study's `image_dataset_from_directory`, c: one batch held in memory, the bound), against targets; each
variant in a process of its own, with oneDNN and threads as its training runs them. The cells, the ratios and the
targets: bench/README.md. Writes results/throughput.json and .md.

    uv run --locked python bench/throughput.py                       # the study's four variants, one epoch each
    uv run --locked python bench/throughput.py --variants baseline scaled --steps 20
    uv run --locked python bench/throughput.py --repro-log /tmp/repro.log   # with the study's wall time and memory
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import re
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from outputs import RESULTS, ROOT, run_record, save, table_row, training_onednn
from tqdm import tqdm

from catdog.common.console import quiet_console
from catdog.common.errors import reports_user_errors
from catdog.data.require import require_data
from catdog.settings.params import compose_config
from catdog.settings.project import conf_dir

VARIANTS = ("baseline", "augmented", "scaled", "transfer")
# Each cell: its input pipeline, and its precision (None: the project's).
CELLS = {"project": ("project", None), "reference": ("reference", "float32"),
         "bound_float32": ("bound", "float32"), "bound_bfloat16": ("bound", "bfloat16")}  # fmt: skip
TARGETS = {"a/b": 2.5, "a/c": 0.9, "rss_mib": 4096.0, "study_wall_s": 15 * 60.0}  # a/b: the CNNs only
TIME_WALL = re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)")
TIME_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")


def overrides_for(variant: str, overrides: list[str]) -> list[str]:
    """The overrides that apply to `variant`: unscoped ones, and those prefixed `variant:`."""
    return [rest if colon and scope in VARIANTS else item for item in overrides
            for scope, colon, rest in [item.partition(":")] if not (colon and scope in VARIANTS) or scope == variant]  # fmt: skip


def variant_config(variant: str, overrides: list[str], image_size: int | None = None) -> DictConfig:
    size = [f"trainer.image_size={image_size}"] if image_size else []
    return compose_config(conf_dir(), [f"variant={variant}", *overrides_for(variant, overrides), *size])


def data_path(cfg: DictConfig, key: str) -> Path:
    return ROOT / cfg.data[key]


def train_split(cfg: DictConfig):
    """The train split through the project's decode-once cache."""
    from catdog.data.dataset import load_split

    return load_split(data_path(cfg, "split_dir") / "train.csv", data_path(cfg, "dataset_dir"),
                      list(cfg.data.classes), cfg.trainer.image_size, data_path(cfg, "cache_dir"))  # fmt: skip


def images_seen(steps: int, images_per_pass: int, batch_size: int) -> int:
    """Images in the first `steps` batches of repeated passes whose last batch may be short."""
    passes, rest = divmod(steps, math.ceil(images_per_pass / batch_size))
    return passes * images_per_pass + rest * batch_size


def feeds(cfg: DictConfig, split) -> dict[str, tuple[Any, int]]:
    """Each pipeline, repeating forever, with the images one pass over it holds."""
    import keras
    import tensorflow as tf

    from catdog.data.dataset import batches

    size, batch = cfg.trainer.image_size, cfg.trainer.batch_size
    reference = keras.utils.image_dataset_from_directory(data_path(cfg, "dataset_dir") / cfg.data.train_folder,
                                                         image_size=(size, size), batch_size=batch, seed=cfg.seed,
                                                         verbose=False)  # fmt: skip
    one_batch = (split.images[:batch].astype("float32"), split.labels[:batch])
    return {
        "project": (batches(split, batch, shuffle=True, seed=cfg.seed).repeat(), len(split.labels)),
        "reference": (reference.repeat(), len(reference.file_paths)),
        "bound": (tf.data.Dataset.from_tensors(one_batch).repeat(), batch),
    }


def cell_model(cfg: DictConfig, pipeline: str, steps: int):
    """A fresh model, seeded and compiled as training does, under the current dtype policy; for the reference CNN,
    with its first Conv2D in float64 (Keras casts its input to match), as in the original study."""
    import keras

    from catdog.train.fit import compile_model, make_optimizer
    from catdog.train.models import NET, build_model
    from catdog.train.run import seed_everything

    seed_everything(cfg.seed)
    model = build_model(cfg, num_classes=len(cfg.data.classes))
    if pipeline == "reference" and cfg.model.name == "cnn":
        first = next(layer for layer in model.get_layer(NET).layers if isinstance(layer, keras.layers.Conv2D))

        def clone(layer):
            config = layer.get_config()
            return layer.__class__.from_config({**config, "dtype": "float64"} if layer is first else config)

        model = keras.models.clone_model(model, clone_function=clone, recursive=True)
    compile_model(model, cfg, make_optimizer(cfg, steps))
    return model


def measure(cfg: DictConfig, pipeline: str, precision: str, feed: tuple, steps: int, warmup: int) -> dict:
    """One cell: an untimed fit of `warmup` steps, then `steps` timed; its images, seconds and images/s."""
    import keras

    from catdog.train.precision import policy

    keras.backend.clear_session()  # before the policy: clearing the session resets Keras' dtype policy too
    with policy(precision):
        model = cell_model(cfg, pipeline, warmup + steps)
        model.fit(feed[0], steps_per_epoch=warmup, epochs=1, shuffle=False, verbose=0)
        start = time.perf_counter()
        model.fit(feed[0], steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)
        seconds = time.perf_counter() - start
    images = images_seen(steps, feed[1], cfg.trainer.batch_size)
    return {"precision": precision, "images": images, "seconds": round(seconds, 3),
            "images_per_s": round(images / seconds, 2)}  # fmt: skip


def run_variant(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """A variant's cells, interleaved `--repeats` times, each cell's best run kept (on a shared VM one fit can run
    at half the speed of the next for reasons outside the process); run in a child process of its own, with oneDNN
    as the variant's training runs it."""
    cfg = variant_config(variant, args.override, args.image_size)
    onednn = training_onednn({variant: cfg})  # before TensorFlow is imported
    import tensorflow  # noqa: F401  its start-up lines before the progress bar, whole lines the console filter hides

    from catdog.train.autoprecision import choose
    from catdog.train.precision import resolve
    from catdog.train.threads import size_thread_pools

    threads = size_thread_pools(cfg.trainer.threads)
    setting = cfg.trainer.precision if args.precision == "study" else args.precision
    project = choose(cfg).precision if setting == "auto" else resolve(setting)
    split = train_split(cfg)
    steps = args.steps or math.ceil(len(split.labels) / cfg.trainer.batch_size)
    cells: dict[str, dict] = {}
    with tqdm(total=args.repeats * len(CELLS), desc=variant, unit="cell") as bar:
        for _ in range(args.repeats):
            pipelines = feeds(cfg, split)
            for cell, (pipeline, precision) in CELLS.items():
                run = measure(cfg, pipeline, precision or project, pipelines[pipeline], steps, args.warmup_steps)
                if run["images_per_s"] > cells.get(cell, {}).get("images_per_s", 0):
                    cells[cell] = run
                bar.update()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return summarize(cfg, steps, cells, {"setting": setting, "resolved": project}) | {
        "threads": threads, "onednn": onednn, "peak_rss_mib": round(peak, 1)}  # fmt: skip


def run_isolated(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """`run_variant` in a fresh process, so that memory one variant leaves behind never counts against the next."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        try:
            return child.submit(run_variant, variant, args).result()
        except Exception as exc:  # its own error, or the process died (BrokenProcessPool)
            raise SystemExit(f"the benchmark of {variant} failed: {type(exc).__name__}: {exc}") from exc


def summarize(cfg: DictConfig, steps: int, cells: dict[str, dict], precision: dict[str, str]) -> dict[str, Any]:
    """A variant's settings, cells and ratios with their verdicts: a/b for the CNNs only, a/c against the bound
    in a's precision."""
    rate = {cell: timing["images_per_s"] for cell, timing in cells.items()}
    a_b, a_c = rate["project"] / rate["reference"], rate["project"] / rate[f"bound_{precision['resolved']}"]
    cnn = cfg.model.name == "cnn"
    return {"model": cfg.model.name, "image_size": cfg.trainer.image_size, "batch_size": cfg.trainer.batch_size,
            "steps": steps, "project_precision": precision, "pipelines": cells,
            "bound_bf16_over_f32": round(rate["bound_bfloat16"] / rate["bound_float32"], 3),
            "a/b": round(a_b, 3), "pass_a/b": a_b >= TARGETS["a/b"] if cnn else None,
            "a/c": round(a_c, 3), "pass_a/c": a_c >= TARGETS["a/c"]}  # fmt: skip


def repro_stats(path: Path) -> dict[str, float]:
    """Wall time and maximum RSS of `dvc repro` from its GNU `/usr/bin/time -v` log (the last report in it)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    wall, rss = TIME_WALL.findall(text), TIME_RSS.findall(text)
    if not (wall and rss):
        raise SystemExit(f"{path}: no GNU `/usr/bin/time -v` report (wall clock time and maximum RSS) found")
    seconds = sum(float(part) * 60**i for i, part in enumerate(reversed(wall[-1].split(":"))))
    return {"wall_s": round(seconds, 2), "max_rss_mib": round(int(rss[-1]) / 1024, 1)}


def verdict(passed: bool | None) -> str:
    return "n/a" if passed is None else ("pass" if passed else "**FAIL**")


def markdown(variants: dict[str, dict], repro: dict[str, float] | None) -> str:
    """One row per variant, then memory and the study's wall time against their targets."""
    lines = [table_row(["variant", "model", "size", "batch", "steps", "threads", "a's precision", "a: project",
                        "b: reference", "c: bound f32", "c: bound bf16", "c bf16/f32", "peak RSS MiB", "a/b",
                        f"a/b ≥ {TARGETS['a/b']}", "a/c", f"a/c ≥ {TARGETS['a/c']}"]),
             "|---|---|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|---|--:|---|"]  # fmt: skip
    for name, v in variants.items():
        p = v["project_precision"]
        rates = [f"{v['pipelines'][cell]['images_per_s']:.1f}" for cell in CELLS]
        lines.append(table_row([name, v["model"], v["image_size"], v["batch_size"], v["steps"], v["threads"],
                                p["resolved"] + (" (auto)" if p["setting"] == "auto" else ""), *rates,
                                f"{v['bound_bf16_over_f32']:.2f}", f"{v['peak_rss_mib']:.0f}", f"{v['a/b']:.2f}",
                                verdict(v["pass_a/b"]), f"{v['a/c']:.2f}", verdict(v["pass_a/c"])]))  # fmt: skip
    rss = max(v["peak_rss_mib"] for v in variants.values())
    limit = f"≤ {TARGETS['rss_mib']:.0f} MiB"
    rows = [["benchmark peak RSS (largest variant)", f"{rss:.0f} MiB", limit, verdict(rss <= TARGETS["rss_mib"])]]
    if repro is None:
        rows.append(["`dvc repro` wall time and max RSS", "—", "", "not measured (`--repro-log`)"])
    else:
        wall = repro["wall_s"]
        rows += [["`dvc repro` wall time", f"{wall // 60:.0f}:{wall % 60:04.1f}", f"≤ {TARGETS['study_wall_s'] / 60:.0f} min",
                  verdict(wall <= TARGETS["study_wall_s"])],
                 ["`dvc repro` max RSS", f"{repro['max_rss_mib']:.0f} MiB", limit,
                  verdict(repro["max_rss_mib"] <= TARGETS["rss_mib"])]]  # fmt: skip
    lines += ["", "| measure | value | target | result |", "|---|--:|---|---|", *map(table_row, rows)]
    return "\n".join(lines) + "\n"


def one_or_each(values: dict[str, Any]) -> str:
    """`16` where every variant has it, else `baseline 16, augmented 32, ...`."""
    distinct = set(map(str, values.values()))
    return distinct.pop() if len(distinct) == 1 else ", ".join(f"{k} {v}" for k, v in values.items())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--steps", type=int, help="timed steps per cell (default: one epoch of the train split)")
    parser.add_argument("--warmup-steps", type=int, default=10, help="untimed steps per cell (default: 10)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per cell, best kept (default: 3)")
    parser.add_argument("--image-size", type=int, help="override every variant's trainer.image_size")
    parser.add_argument("--precision", choices=("study", "float32", "bfloat16"), default="study",
                        help="the project cell's precision: each variant's trainer.precision (study) or one forced")  # fmt: skip
    parser.add_argument("--override", action="append", default=[], metavar="[VARIANT:]KEY=VALUE",
                        help="Hydra override for every variant, or for one with a VARIANT: prefix (repeatable)")  # fmt: skip
    parser.add_argument("--repro-log", type=Path, help="GNU `/usr/bin/time -v` log of a full `dvc repro`")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON and table")
    args = parser.parse_args(argv)
    if min(args.warmup_steps, args.repeats, args.steps or 1, args.image_size or 1) < 1:
        parser.error("--steps, --warmup-steps, --repeats and --image-size must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    repro = repro_stats(args.repro_log) if args.repro_log else None
    cfg = variant_config(args.variants[0], args.override, args.image_size)  # no data: one line, before any child
    require_data(OmegaConf.create({k: str(data_path(cfg, k)) for k in ("dataset_dir", "split_dir")}), ("train",))
    variants = {variant: run_isolated(variant, args) for variant in args.variants}
    precision = one_or_each({k: v["project_precision"]["resolved"] for k, v in variants.items()})
    threads = one_or_each({k: v["threads"] for k, v in variants.items()})
    onednn = one_or_each({k: v["onednn"] for k, v in variants.items()})
    settings = {"precision": precision, "batch size": one_or_each({k: v["batch_size"] for k, v in variants.items()}),
                "threads": threads, "oneDNN": onednn, "repeats": args.repeats, "warm-up steps": args.warmup_steps}  # fmt: skip
    states = {v["onednn"].split()[0] for v in variants.values()}  # one state in every child: the machine's
    state = states == {"on"} if len(states) == 1 else None
    run = run_record(__file__, argv, settings, int(threads) if threads.isdigit() else None, precision, state)
    results = {"run": run, "targets": TARGETS, "variants": variants, "repro": repro}
    save(args.out, "throughput", "Training throughput (images/s)", results, markdown(variants, repro))
    return results


if __name__ == "__main__":
    quiet_console()  # no TensorFlow start-up lines, in the child processes too
    reports_user_errors(main)()
