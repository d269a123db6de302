"""Where a benchmark's results go: `<out>/<name>.json` and `<out>/<name>.md`, each written atomically (a run
killed half-way leaves the earlier pair whole), and the table printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from catdog.common.files import write_text


def save(out: Path, name: str, results: dict[str, Any], table: str, *, sort_keys: bool = False) -> None:
    """`results` as `<out>/<name>.json` (keys in their order, or sorted), `table` as `<out>/<name>.md`, and print it."""
    write_text(out / f"{name}.json", json.dumps(results, indent=2, sort_keys=sort_keys) + "\n")
    write_text(out / f"{name}.md", table)
    print(table)
