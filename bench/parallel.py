"""Runs in parallel on this machine: the same sweep of training runs one after another (Hydra's basic launcher)
and two at a time (hydra/launcher=joblib), with TensorFlow's threads sized to the jobs (trainer.threads=auto) and
oversubscribed (every job on all cores). Writes results/parallel.json and results/parallel.md.

    uv run python bench/parallel.py                         # 4 baseline runs of 10 epochs, seeds 1-4
    uv run python bench/parallel.py --runs 2 --epochs 3     # quicker

Needs the study's split (`dvc repro split`). Runs go to a temporary MLflow store and folder, not the study's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from mlflow import MlflowClient
from outputs import save

from catdog.common.machine import available_cores

ROOT = Path(__file__).resolve().parents[1]


def modes(jobs: int) -> dict[str, list[str]]:
    """Each mode's extra overrides on the same sweep."""
    joblib = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    return {
        "serial": [],
        f"joblib n_jobs={jobs}, threads=auto": joblib,
        f"joblib n_jobs={jobs}, threads={available_cores()}": [*joblib, f"trainer.threads={available_cores()}"],
    }


def sweep(mode_overrides: list[str], args: argparse.Namespace, folder: Path) -> dict:
    """Run one sweep; its wall time, and per run: seconds, epochs and training images per second of run time."""
    store = f"sqlite:///{folder / 'mlflow.db'}"
    seeds = ",".join(str(s) for s in range(1, args.runs + 1))
    cmd = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        "--multirun",
        f"variant={args.variant}",
        f"seed={seeds}",
        f"trainer.epochs={args.epochs}",
        "trainer.early_stopping.enabled=false",
        f"hydra.sweep.dir={folder}",
        f"trainer.checkpoint_dir={folder}/checkpoints/${{name}}",
        *mode_overrides,
    ]
    started = time.monotonic()
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "MLFLOW_TRACKING_URI": store})
    wall = time.monotonic() - started
    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    train_images = len((ROOT / "data" / "split" / "train.csv").read_text().splitlines()) - 1
    per_run = [
        {
            "name": r.info.run_name,
            "seconds": r.data.metrics["final_seconds"],
            "threads": int(r.data.tags["tf_threads"]),
            "images_per_s": r.data.metrics["final_epochs_run"] * train_images / r.data.metrics["final_seconds"],
        }
        for r in runs
    ]
    return {"wall_s": round(wall, 1), "runs": per_run}


def markdown(results: dict) -> str:
    serial = results["modes"]["serial"]["wall_s"]
    lines = [
        f"{results['runs']} runs of `{results['variant']}`, {results['epochs']} epochs each, on {results['cores']} "
        f"cores ({results['date']}). Images/s: a run's training images per second of its run time (validation "
        "included), mean over runs.",
        "",
        "| mode | TF threads per job | wall time | vs serial | images/s per job | images/s, all jobs |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in results["modes"].items():
        rate = sum(r["images_per_s"] for r in m["runs"]) / len(m["runs"])
        jobs = 1 if name == "serial" else results["jobs"]
        threads = sorted({r["threads"] for r in m["runs"]})
        lines.append(
            f"| {name} | {', '.join(map(str, threads))} | {m['wall_s']:.0f} s | {serial / m['wall_s']:.2f}× "
            f"| {rate:.0f} | {rate * jobs:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="baseline")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    results = {
        "variant": args.variant,
        "runs": args.runs,
        "epochs": args.epochs,
        "jobs": args.jobs,
        "cores": available_cores(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "modes": {},
    }
    with tempfile.TemporaryDirectory(prefix="catdog-parallel-") as tmp:
        for i, (name, overrides) in enumerate(modes(args.jobs).items()):
            print(f"== {name}", flush=True)
            results["modes"][name] = sweep(overrides, args, Path(tmp) / str(i))
    save(args.out, "parallel", results, markdown(results))


if __name__ == "__main__":
    main()
