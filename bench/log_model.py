"""What logging a model to MLflow costs, by how its requirements are found: the pinned list the project passes,
MLflow's `uv export` (a folder with uv.lock and pyproject.toml: the project root), and MLflow's inference, which loads
the model in a fresh Python (any other folder: a test's, a user's). Best of `--repeats` per way, in seconds; the
study's baseline CNN at 96 px, logged with the Keras flavour into a throwaway SQLite store.

    uv run python bench/log_model.py --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402

from catdog.settings.params import compose_config  # noqa: E402
from catdog.tracking.registry import requirements  # noqa: E402
from catdog.train.models import build_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def log_once(model: keras.Model, folder: Path, pinned: bool) -> float:
    """Seconds to log `model` from `folder`, with the pinned requirements or MLflow's own way."""
    with contextlib.chdir(folder), mlflow.start_run():
        started = time.perf_counter()
        mlflow.keras.log_model(model, name="model", pip_requirements=requirements() if pinned else None)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = build_model(compose_config(ROOT / "conf", ["variant=baseline"]), num_classes=2)
    model(np.zeros((1, 96, 96, 3), "float32"))
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        ways = {
            "pinned (the project)": (ROOT, True),
            "uv export (project root)": (ROOT, False),
            "inference (other folder)": (Path(tmp), False),
        }
        best = {
            name: min(log_once(model, folder, pinned) for _ in range(args.repeats))
            for name, (folder, pinned) in ways.items()
        }
    for name, seconds in best.items():
        print(f"{name:28} {seconds:6.2f} s")


if __name__ == "__main__":
    main()
