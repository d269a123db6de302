"""The report's sections on how the study was made: the data card (source, split, counts, rejected files, samples)
and the provenance of each stage (commit, date, machine, wall time)."""

from __future__ import annotations

from pathlib import Path

from catdog.report.html import Cell, Section, image_file, paragraph, table
from catdog.report.runs import ABSENT, StageTime, duration
from catdog.report.sections import TITLES

SPLIT_ORDER = ("train", "val", "test")


def data_card(card_facts: list[tuple[str, object]], counts: dict, rejects: list[dict], samples: Path) -> Section:
    splits = sorted(counts, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER), s))
    classes = sorted({c for split in counts.values() for c in split})
    rows = [
        [split, *(Cell(counts[split].get(c, 0)) for c in classes), Cell(sum(counts[split].values()))]
        for split in splits
    ]
    parts: list[object] = [table(["fact", "value"], card_facts), table(["split", *classes, "total"], rows)]
    if rejects:
        parts += [
            paragraph(f"{len(rejects)} files rejected:"),
            table(["path", "reason"], [[r["path"], r["reason"]] for r in rejects]),
        ]
    else:
        parts.append(paragraph("No file was rejected (unreadable, or a duplicate of an image in another split)."))
    return Section("data", TITLES["data"], [*parts, image_file(samples, "train split samples", photo=True)])


def provenance(times: list[StageTime], notes: list[str]) -> Section:
    machines = sorted({t.machine for t in times if t.machine != ABSENT})
    label = {m: f"M{i + 1}" for i, m in enumerate(machines)}  # the table names each machine; the list says what it is
    rows = [
        [t.stage, t.commit, t.started, Cell(duration(t.seconds)), label.get(t.machine, ABSENT), t.source] for t in times
    ]
    parts = [
        table(["stage", "commit", "started", "wall time", "machine", "recorded by"], rows),
        *(paragraph(f"{label[m]}: {m}") for m in machines),
    ]
    return Section("provenance", TITLES["provenance"], [*parts, *(paragraph(n, "note") for n in notes)])
