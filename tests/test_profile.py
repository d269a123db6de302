"""bench/profile.py and its parser: TensorFlow profiler traces, the op classes, the table. The timings themselves are
benchmarks, never tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import profile_trace  # noqa: E402


@pytest.mark.parametrize(
    ("node", "op", "thread", "cls"),
    [
        ("while/body/_1/StatefulPartitionedCall/augmented_1/augmentation_1/random_rotation_1/Img", "ImageProjectiveTransformV3", "tf_Compute", "augmentation"),
        ("StatefulPartitionedCall/adam_1/weight_averaging/Mul_3", "Mul", "tf_Compute", "weight averaging"),
        ("StatefulPartitionedCall/cond/adam_1/Mul_19", "Mul", "tf_Compute", "optimizer"),
        ("StatefulPartitionedCall/augmented/net/conv2d/Cast", "Cast", "tf_Compute", "casts"),
        ("gradient_tape/augmented/net/conv2d/convolution/Conv2DBackpropFilter", "_MklNativeConv2DBackpropFilterWithBias", "tf_Compute", "convolution"),
        ("StatefulPartitionedCall/augmented/net/max_pooling2d/MaxPool2d", "_MklNativeMaxPool", "tf_Compute", "other layers + loss"),
        ("while/IteratorGetNextAsOptional", "IteratorGetNextAsOptional", "tf_Compute", "data feed"),
        ("GatherV2", "GatherV2", "tf_data_iterator_get_next", "data feed"),
    ],
)  # fmt: skip
def test_each_op_falls_in_its_class(node: str, op: str, thread: str, cls: str) -> None:
    assert profile_trace.op_class(profile_trace.OpEvent(node, op, thread, 0.001), "adam_1") == cls


def test_a_trace_of_a_function_lists_its_ops_with_their_self_time(tmp_path: Path) -> None:
    import tensorflow as tf

    x = tf.random.uniform((256, 256))
    step = tf.function(lambda a: tf.reduce_sum(tf.matmul(a, a)))
    step(x)
    tf.profiler.experimental.start(str(tmp_path))
    step(x)
    tf.profiler.experimental.stop()
    events = profile_trace.op_events(profile_trace.latest_trace(tmp_path))
    assert {"Sum"} <= {e.op for e in events} and any(e.op.endswith("MatMul") for e in events)  # _MklMatMul: oneDNN
    assert all(e.seconds >= 0 for e in events)
    assert not any(profile_trace.is_op(n) for n in ("ExecutorState::Process", "Iterator::Root", "EagerLocalExecute: x"))
    classes = profile_trace.per_step(events, "adam", steps=1)
    assert set(classes) == set(profile_trace.CLASSES) and classes["other layers + loss"] > 0


def test_the_table_shows_each_precision_s_classes_and_the_bfloat16_ratio() -> None:
    spec = importlib.util.spec_from_file_location("bench_profile", REPO / "bench" / "profile.py")  # not stdlib's
    bench_profile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_profile)
    classes = dict.fromkeys(profile_trace.CLASSES, 1.0)
    top = [{"class": "convolution", "op": "Conv2D", "layer": "net/conv2d", "ms_per_step": 3.25}]
    step = {"wall_ms_per_step": 7.0, "classes_ms_per_step": classes, "top_ops": top}
    precisions = {"float32": step, "bfloat16": {**step, "wall_ms_per_step": 14.0}}
    text = bench_profile.markdown({"baseline": {"batch_size": 16, "steps": 8, "precisions": precisions}})
    assert "| baseline | float32 | 16 | 8 | 7.0 |  | 1.0 | 1.0 | 1.0 | 1.0 | 1.0 | 1.0 | 1.0 | 7.0 |" in text
    assert "| baseline | bfloat16 | 16 | 8 | 14.0 | 2.00 |" in text
    assert "| baseline | bfloat16 | convolution | `Conv2D` | net/conv2d | 3.2 |" in text
