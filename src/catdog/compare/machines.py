"""Which machine fingerprint trained each run of the study (records/train/*.json), and the leaderboard's line saying
so: one machine named, or, when a study mixes fingerprints, which runs trained where. Across fingerprints the
numbers are two draws (docs/reproducibility.md), to be compared over seeds."""

from __future__ import annotations

from pathlib import Path

from catdog.common.machine import words
from catdog.tracking.records import read_record

UNKNOWN = "not recorded"


def run_machine(record_path: Path, stage: str) -> dict[str, str]:
    """The fingerprint id and words of the machine a run's record names (`not recorded` for an older record, or a
    run planted without one)."""
    machine = read_record(record_path, stage).get("machine") if record_path.is_file() else None
    if not machine:
        return {"id": UNKNOWN, "words": "a record written before runs named their machine fingerprint"}
    return {"id": str(machine["id"]), "words": words(machine)}


def machines_note(machines: dict[str, dict[str, str]]) -> list[str]:
    """The leaderboard's line on the machines: `run → {id, words}` for every run compared."""
    by_id: dict[str, list[str]] = {}
    for run, machine in machines.items():
        by_id.setdefault(machine["id"], []).append(run)
    said = {m["id"]: m["words"] for m in machines.values()}
    if len(by_id) == 1:
        (only,) = by_id
        return [f"Every run trained on one machine, fingerprint `{only}`: {said[only]}."]
    parts = [f"`{i}` ({said[i]}): {', '.join(runs)}" for i, runs in by_id.items()]
    return [
        f"The runs trained on {len(by_id)} machine fingerprints, so their numbers are draws from different machines "
        f"(compare them over seeds): {'; '.join(parts)}."
    ]
