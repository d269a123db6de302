"""One variant's training step profiled in float32 and bfloat16: run by bench/profile.py in a child process per
variant, it prints one `RESULT <json>` line.

Each precision's model is built, seeded and compiled as training does it and fed the project's own input pipeline
(the cached uint8 split through `catdog.data.dataset.batches`). After an untimed warm-up, the two precisions take
turns (`--rounds` times) running `--steps` steps under TensorFlow's profiler; each precision's fastest round is
kept, its ops grouped by `op_classes`. TensorFlow runs one op at a time (`--inter-op-threads 1`; each op still
gets the study's intra-op threads): with two, ops overlap and each one's time includes waiting for the shared
threads (baseline: Adam's ops took 32.8 ms/step in float32 and 86.0 in bfloat16 beside the slower bfloat16
convolutions, 8.2 and 7.1 ms alone), while the wall time per step stays the same (114.8 vs 117.6 ms float32,
224.1 vs 214.7 bfloat16). With `--onednn` (and ONEDNN_VERBOSE=1 in the environment, which the parent
sets) it runs one precision's steps without the profiler instead, so that oneDNN's log names each kernel and ISA.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from feeds import train_split  # noqa: E402
from op_classes import EMA_SCOPE, per_step, top_ops  # noqa: E402
from plan import PRECISIONS, variant_config  # noqa: E402
from xplane import latest_trace, op_events  # noqa: E402

from catdog.data.dataset import batches  # noqa: E402
from catdog.train.fit import compile_model, make_optimizer  # noqa: E402
from catdog.train.models import build_model  # noqa: E402
from catdog.train.precision import policy  # noqa: E402
from catdog.train.run import seed_everything  # noqa: E402
from catdog.train.threads import size_thread_pools  # noqa: E402


def label_weight_averaging(optimizer: keras.optimizers.Optimizer) -> None:
    """Run the optimizer's moving-average update inside the EMA_SCOPE name scope, so its ops can be told from the
    optimizer's own (Keras runs both under the optimizer's scope); the update itself is unchanged."""
    update = optimizer._update_model_variables_moving_average

    def labelled(variables):
        with tf.name_scope(EMA_SCOPE):
            return update(variables)

    optimizer._update_model_variables_moving_average = labelled


def step_model(cfg, precision: str, steps: int) -> keras.Model:
    """The variant's model in `precision`, seeded and compiled as a training run does."""
    seed_everything(cfg.seed)
    with policy(precision):
        model = build_model(cfg, num_classes=len(cfg.data.classes))
        compile_model(model, cfg, make_optimizer(cfg, steps))
    label_weight_averaging(model.optimizer)
    return model


def profiled_fit(model: keras.Model, data: tf.data.Dataset, steps: int, logdir: Path) -> tuple[float, list]:
    """Seconds per step of `steps` steps run under the profiler, and their ops."""
    tf.profiler.experimental.start(str(logdir))
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    tf.profiler.experimental.stop()
    return seconds / steps, op_events(latest_trace(logdir))


def profile(cfg, args: argparse.Namespace) -> dict:
    """Each precision's fastest profiled round: wall ms per step and ms per step of each op class, top ops."""
    data = batches(train_split(cfg), cfg.trainer.batch_size, shuffle=True, seed=cfg.seed).repeat()
    models = {p: step_model(cfg, p, 1000) for p in PRECISIONS}
    for model in models.values():
        model.fit(data, steps_per_epoch=args.warmup_steps, epochs=1, verbose=0)
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="catdog-profile-") as tmp:
        for round_ in range(args.rounds):
            for p, model in models.items():
                seconds, events = profiled_fit(model, data, args.steps, Path(tmp) / f"{p}-{round_}")
                if seconds < best.get(p, {}).get("seconds_per_step", float("inf")):
                    optimizer = model.optimizer.name
                    best[p] = {
                        "seconds_per_step": seconds,
                        "wall_ms_per_step": round(1000 * seconds, 2),
                        "classes_ms_per_step": per_step(events, optimizer, args.steps),
                        "top_ops": top_ops(events, optimizer, args.steps),
                    }
    return best


def onednn_run(cfg, args: argparse.Namespace) -> dict:
    """Warm-up and `--steps` steps of one precision without the profiler; oneDNN's log goes to stdout."""
    data = batches(train_split(cfg), cfg.trainer.batch_size, shuffle=True, seed=cfg.seed).repeat()
    model = step_model(cfg, args.onednn, 1000)
    model.fit(data, steps_per_epoch=args.warmup_steps + args.steps, epochs=1, verbose=0)
    return {"steps": args.warmup_steps + args.steps}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--warmup-steps", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--onednn", choices=PRECISIONS, help="run this precision for oneDNN's verbose log")
    parser.add_argument("--inter-op-threads", type=int, default=1)
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--override", action="append", default=[])
    args = parser.parse_args(argv)
    size_thread_pools("auto")  # intra-op: the study's; inter-op: one op at a time, so each op's time is its own
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    cfg = variant_config(args.variant, args)
    result = onednn_run(cfg, args) if args.onednn else profile(cfg, args)
    sys.stdout.flush()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
