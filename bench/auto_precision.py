"""What `trainer.precision=auto` decides on this machine, per variant (`catdog.train.autoprecision.choose`): the
precision, whether it was measured or read from the cache, each precision's seconds per step (the probe: a few steps
of the variant's own model, interleaved), their ratio and how long the decision took. Writes
results/auto_precision.json and .md.

    uv run --locked python bench/auto_precision.py --fresh              # the four variants, measured now
    uv run --locked python bench/auto_precision.py --variants augmented # one variant, cached if decided before
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

from outputs import RESULTS, run_record, save, training_onednn
from throughput import VARIANTS, variant_config

from catdog.common.console import quiet_console
from catdog.train.autoprecision import CACHE_ENV, choose
from catdog.train.threads import size_thread_pools

HEADER = "| variant | chose | how | float32 s/step | bfloat16 s/step | bf16/f32 | decision s |\n| --- | --- | --- | --: | --: | --: | --: |\n"  # noqa: E501


def decide(variant: str) -> str:
    """One Markdown row: `auto`'s decision for `variant` and its timings."""
    cfg = variant_config(variant, ["trainer.precision=auto"])
    started = time.perf_counter()
    decision = choose(cfg)
    took = time.perf_counter() - started
    seconds = decision.seconds_per_step
    return (
        f"| {variant} | {decision.precision} | {decision.source} | {seconds['float32']:.3f} | "
        f"{seconds['bfloat16']:.3f} | {seconds['bfloat16'] / seconds['float32']:.2f} | {took:.1f} |"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--fresh", action="store_true", help="measure in a throwaway cache, not the user's")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    configs = {v: variant_config(v, ["trainer.precision=auto"]) for v in args.variants}
    onednn = training_onednn(configs)  # as training runs it: the probe times the kernels the run would use
    threads = size_thread_pools(configs[args.variants[0]].trainer.threads)  # as a training run sizes them
    with tempfile.TemporaryDirectory() if args.fresh else contextlib.nullcontext() as fresh:
        if fresh:
            os.environ[CACHE_ENV] = fresh
        rows = [decide(variant) for variant in args.variants]
    settings = {"precision": "auto", "batch size": "each variant's", "threads": threads, "oneDNN": onednn,
                "cache": "a throwaway one (--fresh)" if args.fresh else "the user's"}  # fmt: skip
    results = {"run": run_record(__file__, argv, settings, threads, "auto"), "rows": rows}
    save(args.out, "auto_precision", "What trainer.precision=auto chooses", results, HEADER + "\n".join(rows) + "\n")
    return results


if __name__ == "__main__":
    quiet_console()
    main()
