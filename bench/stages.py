"""The study's stages, each run under `stage_clock.py` in a fresh copy of the repository, and their wall times split
into process start and imports, data, fit, logging, evaluation, report and the rest.

The copy (`git clone` of HEAD into a temporary folder, the raw images linked in) starts like a fresh clone: no
decoded-image cache, an empty MLflow store. The stages run in dvc.yaml's order (split, every train@ stage,
compare, report) with the commands dvc.yaml gives them; download is left out (it fetches, it does not compute).
DVC's own time (hashing, caching outputs) is not in the table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from plan import ROOT

HERE = Path(__file__).resolve().parent
CATEGORIES = ("start + imports + exit", "data", "fit", "logging", "evaluation", "report", "other")
START = "start + imports"  # stage_clock.py's category for the interpreter's start and the imports


def commands(study: Path, epochs: int | None) -> dict[str, list[str]]:
    """Each stage's command line (dvc.yaml's, the train matrix expanded from params.yaml), in the study's order."""
    stages = yaml.safe_load((study / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    params = yaml.safe_load((study / "params.yaml").read_text(encoding="utf-8"))["study"]
    out = {"split": stages["split"]["cmd"].split()}
    train = stages["train"]["cmd"]
    for variant in params["variants"]:
        for seed in params["seeds"]:
            cmd = train.replace("${item.variant}", str(variant)).replace("${item.seed}", str(seed)).split()
            out[f"train@{variant}-{seed}"] = cmd + ([f"trainer.epochs={epochs}"] if epochs else [])
    out["compare"], out["report"] = stages["compare"]["cmd"].split(), stages["report"]["cmd"].split()
    return out


def fresh_copy(into: Path) -> Path:
    """HEAD cloned into `into`/study, with the raw images linked from this checkout."""
    study = into / "study"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(study)], check=True)
    raw = ROOT / "data" / "raw" / "cats_and_dogs_filtered"
    if not raw.is_dir():
        raise SystemExit(f"{raw} is missing: run `dvc repro split` first")
    (study / "data" / "raw").mkdir(parents=True, exist_ok=True)
    (study / "data" / "raw" / raw.name).symlink_to(raw)
    return study


def self_times(entries: list[dict]) -> dict[str, float]:
    """Seconds per category, each clocked call's time less the clocked calls inside it (theirs go to their own)."""
    entries = sorted(entries, key=lambda e: (e["start"], -e["end"]))
    split = dict.fromkeys((START, *CATEGORIES[1:]), 0.0)
    stack: list[dict] = []
    for entry in entries:
        while stack and stack[-1]["end"] <= entry["start"]:
            stack.pop()
        if stack:
            split[stack[-1]["category"]] -= entry["end"] - entry["start"]
        split[entry["category"]] += entry["end"] - entry["start"]
        stack.append(entry)
    return split


def run_stage(name: str, cmd: list[str], study: Path, log: Path) -> dict:
    """Run one stage under the clock; its wall time and split (the unclocked rest is `other`)."""
    log.unlink(missing_ok=True)
    script, args = cmd[1], cmd[2:]  # `python src/<script> ...`
    spawned = time.time()
    run = subprocess.run(
        [sys.executable, str(HERE / "stage_clock.py"), str(log), script, *args],
        cwd=study,
        env={**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "CATDOG_SPAWN_TIME": repr(spawned)},
        capture_output=True,
        text=True,
    )
    wall = time.time() - spawned
    if run.returncode:
        raise SystemExit(f"stage {name} failed ({run.returncode}):\n{run.stderr[-3000:]}")
    entries = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    done = next((e["end"] for e in entries if e["category"] == "marker"), spawned + wall)
    entries = [e for e in entries if e["category"] != "marker"]
    entries.append({"name": "exit", "category": START, "start": done, "end": spawned + wall})
    split = self_times(entries)
    split[CATEGORIES[0]] = split.pop(START)
    split["other"] = wall - sum(v for k, v in split.items() if k != "other")
    calls: dict[str, float] = {}
    for e in entries:
        calls[e["name"]] = calls.get(e["name"], 0.0) + e["end"] - e["start"]
    return {"wall": round(wall, 2), "split": {k: round(v, 2) for k, v in split.items()},
            "calls": {k: round(v, 2) for k, v in calls.items()}}  # fmt: skip


def summary(stages: dict[str, dict], total: dict) -> list[str]:
    """Sentences: the share outside the fits, and the costliest clocked calls outside them."""
    outside = total["wall"] - total["split"]["fit"]
    calls: dict[str, float] = {}
    for s in stages.values():
        for name, seconds in s["calls"].items():
            calls[name] = calls.get(name, 0.0) + seconds
    lines = [f"Outside the fits: {outside:.1f} s of {total['wall']:.1f} s ({outside / total['wall']:.0%})."]
    top = sorted(((s, n) for n, s in calls.items() if n not in ("run_phases", "prepare_model")), reverse=True)[:6]
    lines.append("Costliest clocked calls (inclusive, all stages): " + ", ".join(f"`{n}` {s:.1f} s" for s, n in top))
    return lines


def profile_stages(epochs: int | None, keep: Path | None = None) -> dict:
    """Every stage of a fresh copy's study, timed and split; the copy is made in (and left in) `keep` if given,
    e.g. to run bench/predict.py on its champion afterwards."""
    with tempfile.TemporaryDirectory(prefix="catdog-stages-") as tmp:
        study = fresh_copy(keep or Path(tmp))
        stages = {}
        for name, cmd in commands(study, epochs).items():
            print(f"stage {name}: {' '.join(cmd)}", flush=True)
            stages[name] = run_stage(name, cmd, study, Path(tmp) / "clock.jsonl")
    total = {"wall": sum(s["wall"] for s in stages.values())}
    total["split"] = {c: round(sum(s["split"][c] for s in stages.values()), 2) for c in CATEGORIES}
    note = (f"Every fit ran trainer.epochs={epochs} (not the study's)." if epochs else "The study's own epochs.") + (
        " A fresh clone: images decoded once per size, a new MLflow store; download and DVC's own time left out."
    )
    return {"categories": CATEGORIES, "epochs": epochs, "note": note, "stages": stages, "total": total,
            "summary": summary(stages, total)}  # fmt: skip
