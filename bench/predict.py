"""Prediction throughput: images/s from JPEG files on disk to labels, through the classifier `src/predict.py` uses,
beside the model-only bound and the served path.

Over the first `--images` images of the test split (data/split/test.csv), three ways, each in three modes (all
images in one call, in batches of `--batch-size`, one image per call):
- end to end: reading the files, base64, decoding and resizing (the training pipeline's decode), the model and the
  softmax, in this process;
- model only: the model and the softmax on images decoded beforehand (the bound the end-to-end path approaches);
- served: `mlflow models serve --env-manager local` of the model URI, one HTTP request per call with the base64
  images as JSON (client-side reading and encoding counted), when `--model` is a logged classifier's URI.
Each (way, mode) runs `--repeats` times, interleaved, and keeps its best; all must agree on every label. Writes
`results/predict.json` and `results/predict.md` (atomically) and prints the table.

    uv run python bench/predict.py                                   # the registry's champion
    uv run python bench/predict.py --model models/baseline/model.keras --images 100   # no served line
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # serve_timing, also when a test loads this file by path

from outputs import save  # noqa: E402
from serve_timing import Server, bound_labels, classifier_of, decoded  # noqa: E402

from catdog.common.errors import reports_user_errors  # noqa: E402
from catdog.common.machine import cpu_model  # noqa: E402
from catdog.data.manifests import read_manifest  # noqa: E402
from catdog.data.require import require_data  # noqa: E402
from catdog.predict.label_files import find_predictor, predict_files, project_config  # noqa: E402
from catdog.predict.loading import default_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WARMUP_IMAGES = 2


def test_files(cfg, count: int) -> list[Path]:
    """The first `count` images of the test split, as paths under the data set's folder."""
    entries = read_manifest(Path(cfg.data.split_dir) / "test.csv")[:count]
    return [Path(cfg.data.dataset_dir) / e.path for e in entries]


def e2e_labels(files: list[Path], predictor, batch_size: int) -> list[str]:
    """End to end, as src/predict.py runs it; an unreadable file makes the timing unfair and stops the benchmark."""
    rows = predict_files(files, predictor, batch_size)
    failed = [r["path"] for r in rows if r["error"]]
    if failed:
        raise SystemExit(f"{len(failed)} images could not be read, first {failed[0]}: not a fair timing")
    return [r["label"] for r in rows]


def ways(files: list[Path], predictor, server: Server | None) -> dict:
    """Each way to label the first n files in calls of `size`, `f(n, size)`: end to end, model only, served."""
    classifier = classifier_of(predictor)
    images = decoded(files, classifier)
    chosen = {
        "end to end": lambda n, size: e2e_labels(files[:n], predictor, size),
        "model only": lambda n, size: bound_labels(images[:n], classifier, size),
    }
    return chosen | ({"served": lambda n, size: server.labels(files[:n], size)} if server else {})


def measure(files: list[Path], predictor, batch_size: int, repeats: int, server: Server | None = None) -> list[dict]:
    """Best-of-`repeats` seconds of each way in each mode, interleaved; every way and mode must agree on labels."""
    modes = {"all at once": len(files), f"batches of {batch_size}": batch_size, "one by one": 1}
    run = ways(files, predictor, server)
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
    """One mode's figures: end-to-end seconds and images/s, the bound's, their ratio, and the served path's with
    its overhead per request over the end-to-end path."""
    e2e, bound = seconds["end to end"], seconds["model only"]
    out = {"mode": mode, "batch": size, "images": images, "seconds": round(e2e, 4),
           "images_per_s": round(images / e2e, 1), "model_only_images_per_s": round(images / bound, 1),
           "end_to_end_over_bound": round(bound / e2e, 3)}  # fmt: skip
    if "served" in seconds:
        requests = -(-images // size)
        out["served_images_per_s"] = round(images / seconds["served"], 1)
        out["served_overhead_ms_per_request"] = round(1000 * (seconds["served"] - e2e) / requests, 1)
    return out


def markdown(result: dict) -> str:
    served = "served" if result.get("served") else "served: not measured (`--model` is no logged classifier URI)"
    lines = [
        f"Prediction throughput of `{result['model']}` on {result['images']} test images (JPEG files to labels, "
        f"best of {result['repeats']}; {result.get('cpu', '')}, {result['cpus']} CPUs, {result['when']}). End to "
        "end: files, base64, decode, model, softmax in-process; model only: the model and softmax on images decoded "
        f"beforehand (the bound); {served}: `mlflow models serve --env-manager local`, one HTTP request per call.",
        "",
        "| mode | batch | images | seconds | images/s | model-only images/s | end to end / bound | served images/s "
        "| served overhead ms/request |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in result["rows"]:
        cells = [r["mode"], r["batch"], r["images"], f"{r['seconds']:.3f}", f"{r['images_per_s']:.1f}",
                 f"{r['model_only_images_per_s']:.1f}", f"{r['end_to_end_over_bound']:.2f}",
                 r.get("served_images_per_s", "n/a"), r.get("served_overhead_ms_per_request", "n/a")]  # fmt: skip
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="URI or .keras file (default: the registry's champion)")
    parser.add_argument("--images", type=int, default=200, help="the first N test-split images (default 200)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--no-serve", action="store_true", help="leave out the served path")
    args = parser.parse_args(argv)
    if min(args.images, args.batch_size, args.repeats) < 1:
        parser.error("--images, --batch-size and --repeats must be >= 1")
    cfg = project_config()
    model = args.model or default_model(cfg)
    require_data(cfg.data, ("test",))
    files = test_files(cfg, args.images)
    if not files:
        raise SystemExit(f"{cfg.data.split_dir}/test.csv lists no images; run `dvc repro split` first")
    predictor = find_predictor(model, cfg)
    server = None if args.no_serve or Path(model).suffix == ".keras" else Server(model)
    try:
        if server:
            server.wait()
        rows = measure(files, predictor, args.batch_size, args.repeats, server)
    finally:
        if server:
            server.stop()
    result = {
        "model": model,
        "images": len(files),
        "repeats": args.repeats,
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "served": server is not None,
        "python": platform.python_version(),
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "rows": rows,
    }
    save(args.out, "predict", result, markdown(result), sort_keys=True)
    return result


if __name__ == "__main__":
    reports_user_errors(main)()  # a missing model, store or split: one line, as src/predict.py says it
