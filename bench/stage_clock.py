"""Run one study stage's script with clocks around the functions its time goes to:
`python bench/stage_clock.py LOG src/train.py variant=baseline ...` (bench/stages.py does it for every stage).

It imports the modules the script will use (that time is the stage's imports), wraps each function in TIMED with a
clock, then runs the script as `__main__`. Every clocked call, the imports, the process's own start (from
$CATDOG_SPAWN_TIME, set by the parent just before it started this process) and the moment the script returned
(the rest is the process's exit) are appended to LOG as JSON lines.
"""

from __future__ import annotations

import time

STARTED = time.time()

import functools  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import runpy  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

# script -> {"module:attribute[.method]": category}. Functions are wrapped where the stage looks them up (the
# module that imported them by name), so the clock sees the calls the stage makes.
TIMED: dict[str, dict[str, str]] = {
    "train.py": {
        "catdog.train.run:connect": "logging",  # the MLflow store: created and migrated by the first stage
        "catdog.train.run:check_split_settings": "data",
        "catdog.train.run:load_data": "data",
        "catdog.train.run:seed_everything": "fit",
        "catdog.train.run:restore_best": "fit",
        "catdog.train.run:start_tracking": "logging",
        "catdog.train.run:prepare_model": "fit",
        "catdog.train.run:run_phases": "fit",
        "catdog.train.checkpoints:EpochEnd.on_epoch_end": "logging",
        "catdog.train.run:finish": "logging",
        "catdog.train.outputs:save_model": "logging",
        "catdog.train.outputs:log_model": "logging",
        "catdog.train.outputs:log_classifier": "logging",
        "catdog.train.outputs:augmentation_preview": "logging",
        "catdog.train.outputs:plots.learning_curves": "logging",
        "catdog.train.outputs:plots.save": "logging",
        "catdog.train.outputs:mlflow.log_figure": "logging",
    },
    "compare.py": {
        "catdog.compare.stage:connect": "logging",
        "catdog.compare.stage:configured_split": "data",
        "catdog.compare.stage:load_variant": "evaluation",
        "catdog.compare.stage:evaluate_runs": "evaluation",
        "catdog.compare.stage:draw_figures": "logging",
        "catdog.compare.stage:register_champion": "logging",
    },
    "report.py": {
        "catdog.report.build:connect": "logging",
        "catdog.report.build:write_report": "report",
        "catdog.report.build:explain": "report",
        "catdog.report.build:training_records": "report",
    },
    "split.py": {"catdog.data.split:make_split": "data"},
}


def record(log: Path, entry: dict) -> None:
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def clocked(function, name: str, category: str, log: Path):
    """`function` with its calls' start and end appended to `log`."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        start = time.time()
        try:
            return function(*args, **kwargs)
        finally:
            record(log, {"name": name, "category": category, "start": start, "end": time.time()})

    return wrapper


def install(targets: dict[str, str], log: Path) -> None:
    """Import each target's module and wrap the target in place."""
    for target, category in targets.items():
        module_name, _, path = target.partition(":")
        owner = importlib.import_module(module_name)
        *parents, attribute = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        setattr(owner, attribute, clocked(getattr(owner, attribute), path.split(".")[-1], category, log))


def main() -> None:
    log, script, *args = sys.argv[1:]
    log = Path(log).resolve()
    spawned = float(os.environ.get("CATDOG_SPAWN_TIME", STARTED))
    record(log, {"name": "interpreter start", "category": "start + imports", "start": spawned, "end": STARTED})
    # The script's folder first, as `python script` has it (not bench/), before anything is imported: the study
    # copy's own `catdog` then shadows the editable install's (this checkout's src/, uncommitted changes included).
    sys.path[0] = str(Path(script).resolve().parent)
    install(TIMED.get(Path(script).name, {}), log)
    record(log, {"name": "imports", "category": "start + imports", "start": STARTED, "end": time.time()})
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:  # the parent puts the time from here to the process's end (interpreter and TensorFlow teardown) in exit
        record(log, {"name": "script done", "category": "marker", "start": time.time(), "end": time.time()})


if __name__ == "__main__":
    main()
