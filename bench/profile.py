"""Where the time goes: one training step of each variant split by op class in float32 and bfloat16 (TensorFlow's
profiler), the oneDNN kernels and ISA behind them (ONEDNN_VERBOSE), and optionally the study's stages split into
process start and imports, data, fit, logging, evaluation and report (`--stages`).

    uv run python bench/profile.py                                    # all four variants' steps
    uv run python bench/profile.py --variants augmented --rounds 3   # one variant, more interleaved rounds
    uv run python bench/profile.py --stages --epochs 1                # also the study's stages, 1 epoch per fit

Writes `results/profile.json` and `results/profile.md` (atomically) and prints the table; a section this run does
not measure (steps or stages) is kept from the earlier profile.json there if it was measured on this machine. Each
variant runs in its own child process (`profile_step.py`), and again once per precision with oneDNN's verbose log
on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from onednn_log import isa, kernels
from outputs import save
from plan import PRECISIONS, ROOT, VARIANTS, machine
from profile_tables import markdown

HERE = Path(__file__).resolve().parent
CNN_STEPS, TRANSFER_STEPS = 16, 8  # multiples of trainer.steps_per_execution (8)


def child(args: list[str], env: dict[str, str] | None = None) -> tuple[dict, str]:
    """Run `profile_step.py` with `args`; its RESULT line's JSON and its whole output."""
    run = subprocess.run(
        [sys.executable, str(HERE / "profile_step.py"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    if run.returncode or not lines:
        raise SystemExit(f"profile_step.py {' '.join(args)} failed ({run.returncode}):\n{run.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :]), run.stdout


def profile_variant(variant: str, args: argparse.Namespace) -> dict:
    """One variant's step profile in both precisions, and (unless --no-onednn) its oneDNN kernels in each."""
    steps = args.steps or (TRANSFER_STEPS if variant == "transfer" else CNN_STEPS)
    common = ["--variant", variant, "--steps", str(steps), "--warmup-steps", str(args.warmup_steps or steps)]
    common += [f"--override={o}" for o in args.override] + ["--inter-op-threads", str(args.inter_op_threads)]
    print(f"profile: {variant}, {steps} steps x {args.rounds} rounds per precision", flush=True)
    result, _ = child([*common, "--rounds", str(args.rounds)])
    result = {"steps": steps, "inter_op_threads": args.inter_op_threads, "precisions": result}
    if not args.no_onednn:
        result["onednn"] = {}
        for precision in PRECISIONS:
            done, log = child([*common, "--onednn", precision], {"ONEDNN_VERBOSE": "1"})
            result["onednn"][precision] = {"isa": isa(log), "kernels": kernels(log, done["steps"])}
    return result


def run_info(argv: list[str] | None) -> dict:
    """When and how a section was measured, and how busy the machine was as it started."""
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["bench/profile.py", *(argv if argv is not None else sys.argv[1:])]),
        "load_average": [round(x, 1) for x in os.getloadavg()],
    }


def carried(out: Path, here: dict) -> dict:
    """The sections of `out`'s earlier profile.json measured on this machine (same CPU, ids, TensorFlow), kept for
    what this run does not measure: `--variants` alone leaves the stages, `--variants --stages` the steps."""
    try:
        earlier = json.loads((out / "profile.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if earlier.get("machine") != here:
        return {}
    return {k: earlier[k] for k in ("steps", "steps_run", "stages", "stages_run") if k in earlier}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="*", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--steps", type=int, help=f"profiled steps (default {CNN_STEPS}, transfer {TRANSFER_STEPS})")
    parser.add_argument("--warmup-steps", type=int, help="untimed steps first (default: --steps)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per precision, fastest kept")
    parser.add_argument("--no-onednn", action="store_true", help="skip the oneDNN verbose runs")
    parser.add_argument("--inter-op-threads", type=int, default=1, help="TensorFlow's inter-op threads (default 1)")
    parser.add_argument("--override", action="append", default=[], help="Hydra override for every variant")
    parser.add_argument("--stages", action="store_true", help="also run and time the study's stages (stages.py)")
    parser.add_argument("--epochs", type=int, help="with --stages: trainer.epochs for every fit (default: study's)")
    parser.add_argument("--study-dir", type=Path, help="with --stages: make (and keep) the study's copy here")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    here = machine()
    results = {"machine": here, **carried(args.out, here)}
    if args.variants:
        run = run_info(argv)
        results["steps"], results["steps_run"] = {v: profile_variant(v, args) for v in args.variants}, run
    if args.stages:
        from stages import profile_stages

        run = run_info(argv)
        results["stages"], results["stages_run"] = profile_stages(args.epochs, args.study_dir), run
    save(args.out, "profile", results, markdown(results))
    return results


if __name__ == "__main__":
    main()
