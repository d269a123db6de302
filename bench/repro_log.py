"""The study's own figures: wall time and maximum RSS of a full `dvc repro` from its GNU `/usr/bin/time -v` log."""

from __future__ import annotations

import re
from pathlib import Path

GNU_TIME_WALL = re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)")
GNU_TIME_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")


def clock_seconds(text: str) -> float:
    """Seconds in GNU time's `h:mm:ss` or `m:ss.ss`."""
    return sum(float(part) * 60**i for i, part in enumerate(reversed(text.split(":"))))


def clock(seconds: float) -> str:
    """`seconds` as GNU time writes short runs, `m:ss.s` (minutes beyond 59 stay minutes)."""
    minutes, rest = divmod(seconds, 60)
    return f"{minutes:.0f}:{rest:04.1f}"


def repro_stats(path: Path) -> dict[str, float]:
    """Wall time and maximum RSS of `dvc repro` from a GNU `/usr/bin/time -v` log (its last report)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    wall, rss = GNU_TIME_WALL.findall(text), GNU_TIME_RSS.findall(text)
    if not (wall and rss):
        raise SystemExit(f"{path}: no GNU `/usr/bin/time -v` report (wall clock time and maximum RSS) found")
    return {"wall_s": round(clock_seconds(wall[-1]), 2), "max_rss_mib": round(int(rss[-1]) / 1024, 1)}
