"""What every benchmark writes: `<out>/<name>.json` and `<out>/<name>.md` (atomically: a run killed half-way leaves
the earlier pair whole), the table printed too. Both open with the run's record: when, the commit, the command, the
settings that decide the numbers and the machine (`catdog.common.machine.fingerprint`, its id in the last words),
so a table read later says what it measured and where; timings compare only under one fingerprint id."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from catdog.common.files import write_text
from catdog.common.machine import ONEDNN_ENV, fingerprint, words

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def commit() -> str:
    """HEAD's short hash, saying so where the working tree differs from it."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short=10", "HEAD"], capture_output=True, text=True)
    if head.returncode:
        return "unknown (not a git checkout)"
    changed = subprocess.run([*git, "diff", "--quiet", "HEAD", "--"]).returncode
    return head.stdout.strip() + (" with uncommitted changes" if changed else "")


def training_onednn(configs: dict[str, DictConfig]) -> str:
    """Run oneDNN in this process as the variants' training would (`trainer.onednn`: catdog.train.onednn.apply),
    before TensorFlow is imported; its state and source, e.g. `on (cached)`. One process runs one state: a variant
    whose training would run the other stops the benchmark, named (benchmark it alone with --variants)."""
    from catdog.train import onednn

    (first, cfg), *rest = configs.items()
    applied = onednn.apply(cfg)
    decided = applied.source in ("measured", "cached", "setting")  # not by the user's variable or an earlier import
    if other := [v for v, c in rest if decided and onednn.wanted(c).on != applied.on]:
        raise SystemExit(f"{', '.join(other)} train with oneDNN {onednn.name(not applied.on)} and {first} with it "
                         f"{onednn.name(applied.on)} here (trainer.onednn): benchmark them apart with --variants")  # fmt: skip
    return f"{onednn.name(applied.on)} ({applied.source})"


def run_record(
    script: str,
    argv: list[str] | None,
    settings: dict[str, Any],
    threads: int | None,
    precision: str | None,
    onednn: bool | None = None,
) -> dict[str, Any]:
    """The record that heads a results file: `script` (a path in bench/) run with `argv` (None: this process's);
    `onednn`, the state its child processes ran where it differs from this process's (None: this process's)."""
    args = sys.argv[1:] if argv is None else argv
    environ = os.environ if onednn is None else {**os.environ, ONEDNN_ENV: "1" if onednn else "0"}
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "command": " ".join(["uv run --locked python", f"bench/{Path(script).name}", *args]),
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "settings": settings,
        "machine": fingerprint(threads, precision, environ=environ),
    }


def table_row(cells: list[Any]) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def header(title: str, run: dict[str, Any]) -> str:
    settings = "; ".join(f"{key}: {value}" for key, value in run["settings"].items())
    load = ", ".join(f"{x:.1f}" for x in run["load_average"])
    return (
        f"# {title}\n\n- commit: {run['commit']}\n- command: `{run['command']}`\n- settings: {settings}\n"
        f"- machine: {words(run['machine'])}\n- measured: {run['created']}, load average {load} at the start\n\n"
    )


def save(out: Path, name: str, title: str, results: dict[str, Any], table: str) -> None:
    """`results` (with its `run` record) as `<out>/<name>.json`; the record and `table` as `<out>/<name>.md`."""
    text = header(title, results["run"]) + table
    write_text(out / f"{name}.json", json.dumps(results, indent=2) + "\n")
    write_text(out / f"{name}.md", text)
    print(text)
