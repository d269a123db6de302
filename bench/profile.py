"""Where a training step's time goes: each variant's step in float32 and bfloat16 under TensorFlow's profiler, its
ops' self time by class (convolution, augmentation, casts, other layers + loss, optimizer, weight averaging, data
feed; `profile_trace.py`) and the costliest ops.

Each precision's model is built, seeded and compiled as training does it and fed the project's own pipeline; after
an untimed warm-up the precisions take turns (`--rounds`) running `--steps` steps under the profiler, and each
precision's fastest round is kept. TensorFlow runs one op at a time (`--inter-op-threads 1`; each op keeps the
study's intra-op threads), so a row's classes add up to its wall time: with more, overlapping ops each count their
waiting for the shared threads too. Writes results/profile.json and .md.

    uv run --locked python bench/profile.py                                    # the four variants
    uv run --locked python bench/profile.py --variants augmented --rounds 3    # one variant, more rounds
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from outputs import RESULTS, run_record, save, table_row, training_onednn
from profile_trace import CLASSES, EMA_SCOPE, latest_trace, op_events, per_step, top_ops
from throughput import VARIANTS, train_split, variant_config

from catdog.common.console import quiet_console

PRECISIONS = ("float32", "bfloat16")
CNN_STEPS, TRANSFER_STEPS = 16, 8  # multiples of trainer.steps_per_execution (8)


def step_model(cfg, precision: str):
    """The variant's model in `precision`, seeded and compiled as a training run does, its optimizer's
    moving-average update run inside EMA_SCOPE (Keras runs it in the optimizer's own scope) so that the profile
    tells the two apart; the update itself is unchanged."""
    import tensorflow as tf

    from catdog.train.fit import compile_model, make_optimizer
    from catdog.train.models import build_model
    from catdog.train.precision import policy
    from catdog.train.run import seed_everything

    seed_everything(cfg.seed)
    with policy(precision):
        model = build_model(cfg, num_classes=len(cfg.data.classes))
        compile_model(model, cfg, make_optimizer(cfg, 1000))
    update = model.optimizer._update_model_variables_moving_average

    def labelled(variables):
        with tf.name_scope(EMA_SCOPE):
            return update(variables)

    model.optimizer._update_model_variables_moving_average = labelled
    return model


def profile_variant(cfg, steps: int, warmup: int, rounds: int) -> dict[str, Any]:
    """Each precision's fastest profiled round: wall ms per step, ms per step of each op class, the costliest ops."""
    import keras
    import tensorflow as tf

    from catdog.data.dataset import batches

    keras.backend.clear_session()
    data = batches(train_split(cfg), cfg.trainer.batch_size, shuffle=True, seed=cfg.seed).repeat()
    models = {p: step_model(cfg, p) for p in PRECISIONS}
    for model in models.values():
        model.fit(data, steps_per_epoch=warmup, epochs=1, shuffle=False, verbose=0)
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="catdog-profile-") as tmp:
        for round_ in range(rounds):
            for p, model in models.items():
                logdir = Path(tmp) / f"{p}-{round_}"
                tf.profiler.experimental.start(str(logdir))
                start = time.perf_counter()
                model.fit(data, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)
                seconds = (time.perf_counter() - start) / steps
                tf.profiler.experimental.stop()
                if seconds < best.get(p, {}).get("seconds_per_step", float("inf")):
                    events, optimizer = op_events(latest_trace(logdir)), model.optimizer.name
                    best[p] = {"seconds_per_step": seconds, "wall_ms_per_step": round(1000 * seconds, 2),
                               "classes_ms_per_step": per_step(events, optimizer, steps),
                               "top_ops": top_ops(events, optimizer, steps)}  # fmt: skip
    return best


def markdown(steps: dict[str, dict]) -> str:
    """The op classes per step of each variant and precision, then each one's costliest ops."""
    lines = [table_row(["variant", "precision", "batch", "steps", "wall ms/step", "bf16/f32 wall", *CLASSES,
                        "ops total"]), table_row(["---", "---", *["--:"] * (len(CLASSES) + 5)])]  # fmt: skip
    for variant, v in steps.items():
        p = v["precisions"]
        ratio = p["bfloat16"]["wall_ms_per_step"] / p["float32"]["wall_ms_per_step"]
        for precision, r in p.items():
            c = r["classes_ms_per_step"]
            lines.append(table_row([variant, precision, v["batch_size"], v["steps"], f"{r['wall_ms_per_step']:.1f}",
                                    f"{ratio:.2f}" if precision == "bfloat16" else "",
                                    *(f"{c[k]:.1f}" for k in CLASSES), f"{sum(c.values()):.1f}"]))  # fmt: skip
    lines += ["", "The costliest ops of each step:", "", "| variant | precision | class | op | layer | ms/step |"]
    lines.append("|---|---|---|---|---|--:|")
    for variant, v in steps.items():
        for precision, r in v["precisions"].items():
            lines += [table_row([variant, precision, op["class"], f"`{op['op']}`", op["layer"],
                                 f"{op['ms_per_step']:.1f}"]) for op in r["top_ops"]]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--steps", type=int, help=f"profiled steps (default {CNN_STEPS}, transfer {TRANSFER_STEPS})")
    parser.add_argument("--warmup-steps", type=int, help="untimed steps first (default: --steps)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per precision, fastest kept")
    parser.add_argument("--inter-op-threads", type=int, default=1, help="TensorFlow's inter-op threads (default 1)")
    parser.add_argument("--override", action="append", default=[], help="Hydra override for every variant")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    configs = {v: variant_config(v, args.override) for v in args.variants}
    onednn = training_onednn(configs)  # before TensorFlow is imported
    import tensorflow as tf

    from catdog.train.threads import size_thread_pools

    threads = size_thread_pools(configs[args.variants[0]].trainer.threads)  # intra-op: the study's
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    steps = {}
    for variant, cfg in configs.items():
        n = args.steps or (TRANSFER_STEPS if cfg.model.name == "transfer" else CNN_STEPS)
        print(f"profile: {variant}, {n} steps x {args.rounds} rounds per precision", flush=True)
        precisions = profile_variant(cfg, n, args.warmup_steps or n, args.rounds)
        steps[variant] = {"batch_size": cfg.trainer.batch_size, "steps": n, "precisions": precisions}
    settings = {"precision": "float32 and bfloat16", "batch size": "per row", "threads": threads,
                "inter-op threads": args.inter_op_threads, "oneDNN": onednn, "rounds": args.rounds}  # fmt: skip
    results = {"run": run_record(__file__, argv, settings, threads, "float32 and bfloat16"), "steps": steps}
    save(args.out, "profile", "One training step by op class (ms per step)", results, markdown(steps))
    return results


if __name__ == "__main__":
    quiet_console()
    main()
