"""bench/profile.py's parser: a TensorFlow profiler trace (`*.xplane.pb`, read without TensorBoard: the protobuf's
descriptor ships inside the TensorFlow wheel) as the ops a step executed, each with its self time, and each op's
class (which part of a training step it belongs to) from its name scope and op type."""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

HOST_PLANE = "/host:CPU"
DESCRIPTOR = "include/tsl/profiler/protobuf/xplane_proto-descriptor-set.proto.bin"
CLASSES = ("convolution", "augmentation", "casts", "other layers + loss", "optimizer", "weight averaging", "data feed")
EMA_SCOPE = "weight_averaging"  # bench/profile.py runs the optimizer's moving-average update inside this name scope
AUGMENTATION_SCOPE = "augmentation"  # catdog.train.models.augmentation's Sequential
DATA_OPS = re.compile(r"Iterator|^Optional")


@dataclass(frozen=True)
class OpEvent:
    """One executed op: its graph node (function-call prefixes kept), op type, thread and self time in seconds
    (its duration less that of the ops nested inside it on the same thread)."""

    node: str
    op: str
    thread: str
    seconds: float


@functools.cache
def xspace_class():
    """The XSpace message class, built from the descriptor set in TensorFlow's wheel."""
    import tensorflow as tf
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    files = descriptor_pb2.FileDescriptorSet.FromString((Path(tf.__file__).parent / DESCRIPTOR).read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.profiler.XSpace"))


def latest_trace(logdir: Path) -> Path:
    """The newest `*.xplane.pb` under `logdir` (tf.profiler writes one folder per session)."""
    traces = sorted(logdir.rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    if not traces:
        raise FileNotFoundError(f"no *.xplane.pb under {logdir}")
    return traces[-1]


def is_op(name: str) -> bool:
    """Whether an event's name is an op's, `<node>:<OpType>` (node names hold no colon or space; the executor's and
    tf.data's own events, `ExecutorState::Process`, `Iterator::Root`, do)."""
    node, colon, op = name.partition(":")
    return bool(node and colon and op.isidentifier() and " " not in node)


def op_events(trace: Path) -> list[OpEvent]:
    """The executed ops of `trace`, each with its self time (nested ops on the same thread subtracted)."""
    space = xspace_class().FromString(trace.read_bytes())
    plane = next(p for p in space.planes if p.name == HOST_PLANE)
    ops: list[OpEvent] = []
    for line in plane.lines:
        thread = line.name.split("/")[0]
        stack: list[tuple[int, int]] = []  # (end in ps, index in ops) of the enclosing ops
        for event in sorted(line.events, key=lambda e: (e.offset_ps, -e.duration_ps)):
            name = plane.event_metadata[event.metadata_id].name
            if not is_op(name):
                continue
            while stack and stack[-1][0] <= event.offset_ps:
                stack.pop()
            seconds = event.duration_ps / 1e12
            if stack:  # a nested op: its time is its own, not its parent's
                parent = ops[stack[-1][1]]
                ops[stack[-1][1]] = OpEvent(parent.node, parent.op, parent.thread, parent.seconds - seconds)
            node, _, op = name.rpartition(":")
            ops.append(OpEvent(node, op, thread, seconds))
            stack.append((event.offset_ps + event.duration_ps, len(ops) - 1))
    return ops


def scopes(node: str) -> list[str]:
    """The node's name scopes without Keras' and TensorFlow's `_<n>` uniquifying suffixes."""
    return [re.sub(r"_\d+$", "", part) for part in node.split("/")[:-1]]


def op_class(event: OpEvent, optimizer: str) -> str:
    """The class of one executed op; `optimizer` is the optimizer's name (`adam`, or `adam_1` for the second one a
    process builds: its scope, uniquified)."""
    parts, optimizer = scopes(event.node), re.sub(r"_\d+$", "", optimizer)
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


def top_ops(events: list[OpEvent], optimizer: str, steps: int, count: int = 6) -> list[dict]:
    """The `count` costliest (class, op type, layer) groups in ms per step: the kernels behind a class."""
    groups: dict[tuple[str, str, str], float] = defaultdict(float)
    for event in events:
        parts = [p for p in scopes(event.node) if p != "gradient_tape" and not p.startswith(("while", "Stateful"))]
        groups[(op_class(event, optimizer), event.op, "/".join(parts[-2:]) or "-")] += event.seconds
    ranked = sorted(groups.items(), key=lambda item: -item[1])[:count]
    return [{"class": c, "op": op, "layer": layer, "ms_per_step": round(1000 * s / steps, 2)}
            for (c, op, layer), s in ranked]  # fmt: skip
