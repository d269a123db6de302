"""What `trainer.precision=auto` decides on this machine, per variant: the precision, whether it was measured or read
from the cache, each precision's seconds per step (the probe: a few steps of the variant's own model, interleaved)
and how long the decision took. The CPU as the profile names it and TensorFlow's oneDNN state head the table.

    uv run python bench/auto_precision.py                          # the four variants, cache as it is
    uv run python bench/auto_precision.py --fresh --variants augmented   # measure again (a throwaway cache)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time

from plan import ROOT, VARIANTS, machine

from catdog.common.console import quiet_console
from catdog.settings.params import compose_config
from catdog.train.autoprecision import CACHE_ENV, choose


def machine_line() -> str:
    """The CPU as the profile names it (`plan.machine`), and whether TensorFlow runs its oneDNN optimisations."""
    from tensorflow.python.util import _pywrap_util_port

    here = machine()
    return (
        f"{here['cpu']} (family/model/stepping {here['family_model_stepping']}; bfloat16 flags: "
        f"{', '.join(here['bf16_flags']) or 'none'}); TensorFlow {here['tensorflow']}, oneDNN optimisations: "
        f"{'on' if _pywrap_util_port.IsMklEnabled() else 'off'}"
    )


def decide(variant: str) -> str:
    """One Markdown row: `auto`'s decision for `variant` and its timings."""
    cfg = compose_config(ROOT / "conf", [f"variant={variant}", "trainer.precision=auto"])
    started = time.perf_counter()
    decision = choose(cfg)
    took = time.perf_counter() - started
    seconds = decision.seconds_per_step
    return (
        f"| {variant} | {decision.precision} | {decision.source} | {seconds['float32']:.3f} | "
        f"{seconds['bfloat16']:.3f} | {seconds['bfloat16'] / seconds['float32']:.2f} | {took:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--fresh", action="store_true", help="measure in a throwaway cache, not the user's")
    args = parser.parse_args()
    quiet_console()
    with tempfile.TemporaryDirectory() if args.fresh else contextlib.nullcontext() as fresh:
        if fresh:
            os.environ[CACHE_ENV] = fresh
        print(machine_line())
        print("\n| variant | chose | how | float32 s/step | bfloat16 s/step | bf16/f32 | decision s |")
        print("| --- | --- | --- | --: | --: | --: | --: |")
        for variant in args.variants:
            print(decide(variant), flush=True)


if __name__ == "__main__":
    main()
