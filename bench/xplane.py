"""TensorFlow profiler traces (`*.xplane.pb`) read without TensorBoard: the protobuf's descriptor ships inside the
TensorFlow wheel, and the host plane's events name each executed op `<node name>:<op type>`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HOST_PLANE = "/host:CPU"
DESCRIPTOR = "include/tsl/profiler/protobuf/xplane_proto-descriptor-set.proto.bin"


@dataclass(frozen=True)
class OpEvent:
    """One executed op: its graph node (function-call prefixes kept), op type, thread and self time in seconds
    (its duration less that of ops nested inside it on the same thread)."""

    node: str
    op: str
    thread: str
    seconds: float


@dataclass(frozen=True)
class Span:
    """Any event on a thread (op or not), in seconds, with its nesting depth on that thread."""

    name: str
    thread: str
    seconds: float
    depth: int


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


def spans(trace: Path) -> Iterator[Span]:
    """Every host event with its nesting depth on its thread (an event inside another's time span is deeper)."""
    space = xspace_class().FromString(trace.read_bytes())
    plane = next(p for p in space.planes if p.name == HOST_PLANE)
    for line in plane.lines:
        thread = line.name.split("/")[0]
        open_ends: list[int] = []
        for event in sorted(line.events, key=lambda e: (e.offset_ps, -e.duration_ps)):
            while open_ends and open_ends[-1] <= event.offset_ps:
                open_ends.pop()
            yield Span(plane.event_metadata[event.metadata_id].name, thread, event.duration_ps / 1e12, len(open_ends))
            open_ends.append(event.offset_ps + event.duration_ps)


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
        stack: list[list] = []  # [end_ps, index in ops] of the enclosing ops
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
            stack.append([event.offset_ps + event.duration_ps, len(ops) - 1])
    return ops
