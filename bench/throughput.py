"""Training throughput (images/s) of each study variant through three input pipelines, checked against targets.

project (a): the project's cached uint8 split served by `catdog.data.dataset.batches`, in the precision the study trains
the variant in (its `trainer.precision`) or the one `--precision` forces. reference (b): the original study's
`image_dataset_from_directory`, decoding the JPEGs every epoch, in float32 and for CNN models a float64 first
Conv2D. bound (c): the project's model stepping over one float32 batch already in memory, i.e. the compute bound, in
float32 and in bfloat16.

The parts: `plan` (configs, precisions, cells), `feeds` (the input pipelines), `timing` (fits, child processes,
RSS), `results` (targets, JSON), `tables` (Markdown) and `repro_log` (GNU time logs of the study).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from feeds import PIPELINES, check_data, images_seen
from outputs import save
from plan import CELLS, PRECISION_CHOICES, ROOT, VARIANTS, overrides_for, variant_config
from repro_log import repro_stats
from results import TARGETS, meta, process_summary, summarize
from tables import markdown
from timing import run_isolated
from tqdm import tqdm

from catdog.common.errors import reports_user_errors

# Re-exported for tests/test_bench.py, which imports this script by name.
__all__ = ["CELLS", "PIPELINES", "images_seen", "main", "markdown", "meta", "overrides_for", "parse_args"]
__all__ += ["process_summary", "repro_stats", "run_isolated", "summarize"]


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
    parser.add_argument(
        "--repeats", type=positive_int, default=3, help="interleaved runs per cell, best kept (default: 3)"
    )
    parser.add_argument("--image-size", type=positive_int, help="override every variant's trainer.image_size")
    parser.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default="study",
        help="the project pipeline's precision: each variant's trainer.precision (study, the default) or one forced; "
        "the reference stays float32, the bound runs in both",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="[VARIANT:]KEY=VALUE",
        help="Hydra override for every variant, or for one with a VARIANT: prefix (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="folder for the JSON and table")
    parser.add_argument("--repro-log", type=Path, help="GNU `/usr/bin/time -v` log of a full `dvc repro`")
    parser.add_argument(
        "--baseline-repro-log",
        type=Path,
        help="the same for the study before (timed in the same sitting): the wall time is then judged after/before",
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        help="time nothing: rewrite an earlier run's throughput.json and table with the --repro-log logs, e.g. of a "
        "study timed after the benchmark (the cells stay as measured)",
    )
    args = parser.parse_args(argv)
    if args.baseline_repro_log and not args.repro_log:
        parser.error("--baseline-repro-log needs --repro-log, the study it is the baseline of")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write `throughput.json` and `throughput.md` to `--out`."""
    args = parse_args(argv)
    repro = repro_stats(args.repro_log) if args.repro_log else None
    baseline = repro_stats(args.baseline_repro_log) if args.baseline_repro_log else None
    if args.from_json:
        results = json.loads(args.from_json.read_text(encoding="utf-8"))
        results["meta"]["command"] += f"; tables rewritten by {' '.join(sys.argv)}"
        results["process"] = process_summary(results["variants"], repro, baseline)
    else:
        check_data(variant_config(args.variants[0], args))
        with tqdm(total=len(args.variants) * len(CELLS) * args.repeats, desc="throughput", unit="cell") as bar:
            variants = {variant: run_isolated(variant, args, bar) for variant in args.variants}
        process = process_summary(variants, repro, baseline)
        results = {"meta": meta(args), "targets": TARGETS, "variants": variants, "process": process}
    save(args.out, "throughput", results, markdown(results))


if __name__ == "__main__":
    reports_user_errors(main)()
