"""Prediction throughput: images/s from JPEG files on disk to labels, through the classifier `src/predict.py` uses.

Over the first `--images` images of the test split (data/split/test.csv), each timing covers reading the files,
base64, decoding and resizing (the training pipeline's decode), the model and the softmax: all images in one call,
in batches of `--batch-size`, and one image per call. Each mode runs `--repeats` times, interleaved, and keeps its
best. Writes `results/predict.json` and `results/predict.md` (atomically) and prints the table.

    uv run python bench/predict.py                                   # the registry's champion
    uv run python bench/predict.py --model models/baseline/model.keras --images 100
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from catdog.common.errors import reports_user_errors  # noqa: E402
from catdog.common.files import write_json, write_text  # noqa: E402
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


def time_mode(files: list[Path], predictor, batch_size: int) -> tuple[float, list[str]]:
    start = time.perf_counter()
    rows = predict_files(files, predictor, batch_size)
    seconds = time.perf_counter() - start
    failed = [r["path"] for r in rows if r["error"]]
    if failed:
        raise SystemExit(f"{len(failed)} images could not be read, first {failed[0]}: not a fair timing")
    return seconds, [r["label"] for r in rows]


def measure(files: list[Path], predictor, batch_size: int, repeats: int) -> list[dict]:
    """Best-of-`repeats` images/s of each mode; the modes run interleaved and must agree on every label."""
    modes = {"all at once": len(files), f"batches of {batch_size}": batch_size, "one by one": 1}
    predict_files(files[:WARMUP_IMAGES], predictor, WARMUP_IMAGES)  # tracing, first allocations
    for size in set(modes.values()):
        predict_files(files[: min(size, len(files))], predictor, size)  # each batch shape traced once
    best = {mode: float("inf") for mode in modes}
    labels = {}
    for _ in range(repeats):
        for mode, size in modes.items():
            seconds, labels[mode] = time_mode(files, predictor, size)
            best[mode] = min(best[mode], seconds)
    if len({tuple(v) for v in labels.values()}) != 1:
        raise SystemExit(f"the modes disagree on labels: {labels}")
    return [
        {"mode": mode, "batch": modes[mode], "images": len(files), "seconds": round(best[mode], 4),
         "images_per_s": round(len(files) / best[mode], 1)}
        for mode in modes
    ]  # fmt: skip


def markdown(result: dict) -> str:
    lines = [
        f"Prediction throughput of `{result['model']}` on {result['images']} test images "
        f"(JPEG files to labels, best of {result['repeats']}; {result['cpus']} CPUs, {result['when']}).",
        "",
        "| mode | batch | images | seconds | images/s |",
        "|---|--:|--:|--:|--:|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['mode']} | {r['batch']} | {r['images']} | {r['seconds']:.3f} | {r['images_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="URI or .keras file (default: the registry's champion)")
    parser.add_argument("--images", type=int, default=200, help="the first N test-split images (default 200)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
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
    result = {
        "model": model,
        "images": len(files),
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "rows": measure(files, predictor, args.batch_size, args.repeats),
    }
    table = markdown(result)
    write_json(args.out / "predict.json", result)
    write_text(args.out / "predict.md", table)
    print(table)
    return result


if __name__ == "__main__":
    reports_user_errors(main)()  # a missing model, store or split: one line, as src/predict.py says it
