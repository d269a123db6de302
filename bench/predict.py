"""Prediction throughput: images/s from JPEG files on disk to labels, over the first `--images` test-split images,
three ways (end to end through the classifier `src/predict.py` uses; model only, on images decoded beforehand: the
bound; served, by `mlflow models serve` through `served.py`, for a logged classifier's URI only) in three call sizes
(all at once, `--batch-size`, one by one), interleaved, best of `--repeats`; every way and size must agree on every
label. More in bench/README.md. Writes results/predict.json and .md.

    uv run --locked python bench/predict.py                                # the registry's champion, 200 images
    uv run --locked python bench/predict.py --model models/baseline-42/model.keras --images 100   # not served
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import numpy as np  # noqa: E402
from outputs import RESULTS, run_record, save, table_row  # noqa: E402
from served import ServedModel, first_test_images  # noqa: E402

from catdog.common.console import quiet_console
from catdog.common.errors import reports_user_errors  # noqa: E402
from catdog.common.machine import available_cores  # noqa: E402
from catdog.predict.label_files import find_predictor, predict_files, project_config  # noqa: E402
from catdog.predict.loading import default_model, store_uri  # noqa: E402
from catdog.serve.classifier import MODEL_BATCH, ImageClassifier, softmax  # noqa: E402

WARMUP_IMAGES = 2


def e2e_labels(files: list[Path], predictor, batch_size: int) -> list[str]:
    """End to end, as src/predict.py runs it; an unreadable file makes the timing unfair and stops the benchmark."""
    rows = predict_files(files, predictor, batch_size)
    failed = [r["path"] for r in rows if r["error"]]
    if failed:
        raise SystemExit(f"{len(failed)} images could not be read, first {failed[0]}: not a fair timing")
    return [r["label"] for r in rows]


def bound_labels(images: np.ndarray, classifier: ImageClassifier, batch_size: int) -> list[str]:
    """Labels from the model and softmax alone, in calls of `batch_size` images chunked by MODEL_BATCH inside."""
    labels = []
    for start in range(0, len(images), batch_size):
        call = images[start : start + batch_size]
        for chunk in range(0, len(call), MODEL_BATCH):
            batch = call[chunk : chunk + MODEL_BATCH].astype(np.float32)
            probs = softmax(np.asarray(classifier.model.predict_on_batch(batch), dtype=np.float64))
            labels += [classifier.classes[int(i)] for i in probs.argmax(axis=1)]
    return labels


def classifier_of(predictor) -> ImageClassifier:
    """The `ImageClassifier` behind a predictor from `load_predictor`: a wrapped .keras file's, or a pyfunc's."""
    owner = getattr(predictor, "__self__", None)
    return owner if isinstance(owner, ImageClassifier) else owner.unwrap_python_model()


def ways(files: list[Path], predictor, served: ServedModel | None) -> dict:
    """Each way to label the first n files in calls of `size`, `f(n, size)`."""
    classifier = classifier_of(predictor)
    images = np.stack([classifier.decode(f.read_bytes()) for f in files])
    chosen = {"end to end": lambda n, size: e2e_labels(files[:n], predictor, size),
              "model only": lambda n, size: bound_labels(images[:n], classifier, size)}  # fmt: skip
    return chosen | ({"served": lambda n, size: served.labels(files[:n], size)} if served else {})


def measure(files: list[Path], predictor, batch_size: int, repeats: int, served: ServedModel | None) -> list[dict]:
    """Best-of-`repeats` seconds of each way in each mode, interleaved; every way and mode must agree on labels."""
    modes = {"all at once": len(files), f"batches of {batch_size}": batch_size, "one by one": 1}
    run = ways(files, predictor, served)
    for label in run.values():  # tracing, first allocations, the server's first request; each call size once
        for size in {WARMUP_IMAGES, *modes.values()}:
            label(min(size, len(files)), size)
    best, labels = {}, {}
    for _ in range(repeats):
        for mode, size in modes.items():
            for way, label in run.items():
                start = time.perf_counter()
                labels[(way, mode)] = label(len(files), size)
                best[(way, mode)] = min(best.get((way, mode), float("inf")), time.perf_counter() - start)
    if len({tuple(v) for v in labels.values()}) != 1:
        raise SystemExit(f"the ways and modes disagree on labels: {labels}")
    return [row(mode, size, len(files), {w: best[(w, mode)] for w in run}) for mode, size in modes.items()]


def row(mode: str, size: int, images: int, seconds: dict[str, float]) -> dict:
    """One mode's figures: end to end, the bound and their ratio, and the served path's with its overhead per
    request over the end-to-end path."""
    e2e, bound = seconds["end to end"], seconds["model only"]
    out = {"mode": mode, "batch": size, "images": images, "seconds": round(e2e, 4),
           "images_per_s": round(images / e2e, 1), "model_only_images_per_s": round(images / bound, 1),
           "end_to_end_over_bound": round(bound / e2e, 3)}  # fmt: skip
    if "served" in seconds:
        out["served_images_per_s"] = round(images / seconds["served"], 1)
        out["served_overhead_ms_per_request"] = round(1000 * (seconds["served"] - e2e) / -(-images // size), 1)
    return out


def markdown(rows: list[dict]) -> str:
    lines = [table_row(["mode", "batch", "images", "seconds", "images/s", "model-only images/s", "end to end / bound",
                        "served images/s", "served overhead ms/request"]), "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]  # fmt: skip
    for r in rows:
        lines.append(table_row([r["mode"], r["batch"], r["images"], f"{r['seconds']:.3f}", f"{r['images_per_s']:.1f}",
                                f"{r['model_only_images_per_s']:.1f}", f"{r['end_to_end_over_bound']:.2f}",
                                r.get("served_images_per_s", "n/a"), r.get("served_overhead_ms_per_request", "n/a")]))  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="URI or .keras file (default: the registry's champion)")
    parser.add_argument("--images", type=int, default=200, help="the first N test-split images (default 200)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-serve", action="store_true", help="leave out the served path")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if min(args.images, args.batch_size, args.repeats) < 1:
        parser.error("--images, --batch-size and --repeats must be >= 1")
    cfg = project_config()
    model = args.model or default_model(cfg)
    files = first_test_images(cfg, args.images)
    predictor = find_predictor(model, cfg)
    serve = not (args.no_serve or Path(model).suffix == ".keras")
    with tempfile.TemporaryDirectory() as tmp:
        env = {"MLFLOW_TRACKING_URI": store_uri(cfg)}
        with ServedModel(model, Path(tmp) / "serve.log", env) if serve else contextlib.nullcontext() as served:
            rows = measure(files, predictor, args.batch_size, args.repeats, served)
    settings = {"model": f"`{model}`", "test images": len(files), "batch size": args.batch_size,
                "repeats": args.repeats, "served": "by one uvicorn worker" if serve else "not measured"}  # fmt: skip
    precision = classifier_of(predictor).model.dtype_policy.name  # TensorFlow's threads: its default, every core
    results = {"run": run_record(__file__, argv, settings, available_cores(), precision), "served": serve, "rows": rows}
    save(args.out, "predict", "Prediction throughput (JPEG files to labels)", results, markdown(rows))
    return results


if __name__ == "__main__":
    quiet_console()
    reports_user_errors(main)()  # a missing model, store or split: one line, as src/predict.py says it
