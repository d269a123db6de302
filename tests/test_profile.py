"""bench/profile.py's parts that read things: TensorFlow profiler traces, the op classes, oneDNN's verbose log, and
the stage clock's nesting. The timings themselves are benchmarks, never tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import onednn_log  # noqa: E402
import op_classes  # noqa: E402
import stages  # noqa: E402
import xplane  # noqa: E402

ONEDNN_LOG = """\
onednn_verbose,v1,info,cpu,isa:Intel AVX-512 with Intel DL Boost
onednn_verbose,v1,primitive,info,template:operation,engine,primitive,implementation,prop_kind,memory_descriptors
onednn_verbose,v1,primitive,exec,cpu,convolution,jit_bf16:avx512_core,forward_training,src:bf16::blocked:acdb::f0 \
wei:bf16:a:blocked:ABcd8b16a2b::f0 dst:bf16::blocked:acdb::f0,,alg:convolution_direct,mb32_ic3oc32,4.5
onednn_verbose,v1,primitive,exec,cpu,convolution,jit_bf16:avx512_core,forward_training,src:bf16::blocked:acdb::f0 \
wei:bf16:a:blocked:ABcd8b16a2b::f0 dst:bf16::blocked:acdb::f0,,alg:convolution_direct,mb32_ic3oc32,5.5
onednn_verbose,v1,primitive,exec,cpu,gemm_api,,undef,src_f32::blocked:ab:f0 wei_f32::blocked:ba:f0,,,m32n64k15488,2
some other line, not oneDNN's
"""


def test_the_onednn_log_names_the_isa_and_sums_each_kernel_per_step() -> None:
    assert onednn_log.isa(ONEDNN_LOG) == "Intel AVX-512 with Intel DL Boost"
    conv, gemm = onednn_log.kernels(ONEDNN_LOG, steps=2)
    assert conv == {"primitive": "convolution", "implementation": "jit_bf16:avx512_core",
                    "propagation": "forward_training", "type": "bf16", "calls_per_step": 1.0, "ms_per_step": 5.0}  # fmt: skip
    assert (gemm["primitive"], gemm["type"], gemm["ms_per_step"]) == ("gemm_api", "f32", 1.0)


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
    assert op_classes.op_class(xplane.OpEvent(node, op, thread, 0.001), "adam_1") == cls


def test_a_trace_of_a_function_lists_its_ops_with_their_self_time(tmp_path: Path) -> None:
    import tensorflow as tf

    x = tf.random.uniform((256, 256))
    step = tf.function(lambda a: tf.reduce_sum(tf.matmul(a, a)))
    step(x)
    tf.profiler.experimental.start(str(tmp_path))
    step(x)
    tf.profiler.experimental.stop()
    events = xplane.op_events(xplane.latest_trace(tmp_path))
    assert {"Sum"} <= {e.op for e in events} and any(e.op.endswith("MatMul") for e in events)  # _MklMatMul: oneDNN
    assert all(e.seconds >= 0 for e in events)
    assert not any(xplane.is_op(n) for n in ("ExecutorState::Process", "Iterator::Root", "EagerLocalExecute: x"))
    classes = op_classes.per_step(events, "adam", steps=1)
    assert set(classes) == set(op_classes.CLASSES) and classes["other layers + loss"] > 0


def test_nested_clocked_calls_count_once_each_in_their_own_category() -> None:
    entries = [
        {"name": "finish", "category": "logging", "start": 10.0, "end": 20.0},
        {"name": "evaluate", "category": "evaluation", "start": 12.0, "end": 18.0},
        {"name": "decode", "category": "data", "start": 13.0, "end": 15.0},
        {"name": "fit", "category": "fit", "start": 0.0, "end": 10.0},
    ]
    split = stages.self_times(entries)
    assert (split["logging"], split["evaluation"], split["data"], split["fit"]) == (4.0, 4.0, 2.0, 10.0)


def test_the_stage_commands_are_dvc_yaml_s_with_the_train_matrix_expanded() -> None:
    cmds = stages.commands(REPO, epochs=1)
    assert list(cmds)[0] == "split" and list(cmds)[-2:] == ["compare", "report"]
    train = [c for name, c in cmds.items() if name.startswith("train@")]
    assert train and all(c[:2] == ["python", "src/train.py"] and c[-1] == "trainer.epochs=1" for c in train)


def synthetic_results() -> dict:
    classes = dict.fromkeys(op_classes.CLASSES, 1.0)
    step = {"wall_ms_per_step": 7.0, "classes_ms_per_step": classes, "top_ops": []}
    run = {"created": "2026-12-02T00:00:00+00:00", "command": "bench/profile.py", "load_average": [1.0, 2.0, 3.0]}
    return {
        "machine": {"cpu": "Some CPU", "family_model_stepping": "6/106/6", "bf16_flags": [], "cores": 2,
                    "tensorflow": "2.21.0"},
        "steps": {"baseline": {"steps": 16, "inter_op_threads": 1,
                               "precisions": {"float32": step, "bfloat16": {**step, "wall_ms_per_step": 14.0}}}},
        "steps_run": run,
    }  # fmt: skip


def test_the_table_names_the_cpu_and_the_bfloat16_ratio(tmp_path: Path) -> None:
    import profile_tables

    text = profile_tables.markdown(synthetic_results())
    assert "**Some CPU** (family/model/stepping 6/106/6; bfloat16 flags: none)" in text
    assert "| baseline | bfloat16 | 14.0 | 2.00 |" in text and "load average at start 1.0, 2.0, 3.0" in text


def test_a_section_not_measured_again_is_kept_only_from_the_same_machine(tmp_path: Path) -> None:
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("bench_profile", REPO / "bench" / "profile.py")  # not stdlib's
    bench_profile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_profile)
    earlier = synthetic_results()
    (tmp_path / "profile.json").write_text(json.dumps(earlier))
    assert bench_profile.carried(tmp_path, earlier["machine"])["steps"] == earlier["steps"]
    assert bench_profile.carried(tmp_path, {**earlier["machine"], "family_model_stepping": "6/143/8"}) == {}
    assert bench_profile.carried(tmp_path / "absent", earlier["machine"]) == {}
