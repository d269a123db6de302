"""The profile's op classes: which part of a training step an executed op belongs to, from its graph node's name
scope and its op type, and the per-step table of a trace's ops.
"""

from __future__ import annotations

import re
from collections import defaultdict

from xplane import OpEvent

CLASSES = (
    "convolution",
    "augmentation",
    "casts",
    "other layers + loss",
    "optimizer",
    "weight averaging",
    "data feed",
)
# bench/profile_step.py runs the optimizer's moving-average update inside this name scope (Keras gives it none).
EMA_SCOPE = "weight_averaging"
AUGMENTATION_SCOPE = "augmentation"  # catdog.train.models.augmentation's Sequential
DATA_OPS = re.compile(r"Iterator|^Optional")


def scopes(node: str) -> list[str]:
    """The node's name scopes without Keras' and TensorFlow's `_<n>` uniquifying suffixes."""
    return [re.sub(r"_\d+$", "", part) for part in node.split("/")[:-1]]


def op_class(event: OpEvent, optimizer: str) -> str:
    """The class of one executed op; `optimizer` is the optimizer's name (e.g. `adam`, or `adam_1` for the second
    one a process builds: its scope, uniquified)."""
    parts = scopes(event.node)
    optimizer = re.sub(r"_\d+$", "", optimizer)
    if event.thread.startswith("tf_data") or DATA_OPS.search(event.op):
        return "data feed"
    if AUGMENTATION_SCOPE in parts:
        return "augmentation"
    if EMA_SCOPE in parts:
        return "weight averaging"
    if event.op == "Cast":
        return "casts"
    if optimizer in parts:
        return "optimizer"
    if "Conv2D" in event.op or "DepthwiseConv" in event.op:
        return "convolution"
    return "other layers + loss"


def per_step(events: list[OpEvent], optimizer: str, steps: int) -> dict[str, float]:
    """Milliseconds per step of each class (op self time summed over threads, so overlapping ops both count)."""
    totals = dict.fromkeys(CLASSES, 0.0)
    for event in events:
        totals[op_class(event, optimizer)] += event.seconds
    return {name: round(1000 * seconds / steps, 2) for name, seconds in totals.items()}


def top_ops(events: list[OpEvent], optimizer: str, steps: int, count: int = 12) -> list[dict]:
    """The `count` costliest (class, op type, layer) groups, ms per step, for naming the kernels behind a class."""
    groups: dict[tuple[str, str, str], float] = defaultdict(float)
    for event in events:
        parts = [
            p for p in scopes(event.node) if p not in ("gradient_tape",) and not p.startswith(("while", "Stateful"))
        ]
        layer = "/".join(parts[-2:]) if parts else "-"
        groups[(op_class(event, optimizer), event.op, layer)] += event.seconds
    ranked = sorted(groups.items(), key=lambda item: -item[1])[:count]
    return [
        {"class": c, "op": op, "layer": layer, "ms_per_step": round(1000 * s / steps, 2)}
        for (c, op, layer), s in ranked
    ]
