"""Processes found by an entry of their environment: how the suite tells what it (or one engine) started."""

from __future__ import annotations

import os
from collections.abc import Iterator


def carrying(entry: str) -> Iterator[tuple[int, list[bytes]]]:
    """(pid, argv) of every live process other than this one whose environment holds `entry` (`NAME=value`);
    zombies have an empty environment, and processes that exit meanwhile are passed over."""
    wanted = entry.encode()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as environ:
                if wanted not in environ.read().split(b"\0"):
                    continue
            with open(f"/proc/{name}/cmdline", "rb") as cmdline:
                yield int(name), cmdline.read().split(b"\0")[:-1]
        except OSError:  # gone, or not ours to read
            continue
