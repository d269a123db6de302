"""bench/profile.py's results as Markdown: op classes per step, the costliest ops, oneDNN's kernels and ISA, and
the study's stages."""

from __future__ import annotations

from typing import Any

from op_classes import CLASSES
from tables import table_row

TOP = 6


def header(machine: dict[str, Any]) -> list[str]:
    flags = ", ".join(machine["bf16_flags"]) or "none"
    return [
        "# Where the time goes",
        "",
        f"**{machine['cpu']}** (family/model/stepping {machine['family_model_stepping']}; bfloat16 flags: {flags}) · "
        f"{machine['cores']} cores · TensorFlow {machine['tensorflow']}",
        "",
    ]


def measured(run: dict[str, Any]) -> str:
    load = ", ".join(f"{x:.1f}" for x in run["load_average"])
    return f"Measured {run['created']} (load average at start {load}): `{run['command']}`."


def steps_meta(steps: dict[str, Any]) -> str:
    return ", ".join(sorted({str(v.get("inter_op_threads", "?")) for v in steps.values()}))


def class_table(steps: dict[str, Any], run: dict[str, Any]) -> list[str]:
    """One row per variant and precision: wall ms per step, then each op class's ms per step."""
    lines = [
        "## One training step, by op class (ms per step)",
        "",
        measured(run),
        "",
        f"Op self time from TensorFlow's profiler, with {steps_meta(steps)} inter-op thread(s) (1: one op at a "
        "time, each with the study's intra-op threads, so a row's classes add up to about its wall time; with more, "
        "overlapping ops each count their waiting too). Each precision's fastest of the interleaved rounds.",
        "",
        table_row(["variant", "precision", "wall ms/step", "bf16/f32 wall", *CLASSES, "ops total"]),
        table_row(["---", "---", *["--:"] * (len(CLASSES) + 3)]),
    ]
    for variant, v in steps.items():
        p = v["precisions"]
        ratio = p["bfloat16"]["wall_ms_per_step"] / p["float32"]["wall_ms_per_step"]
        for precision, r in p.items():
            c = r["classes_ms_per_step"]
            shown = f"{ratio:.2f}" if precision == "bfloat16" else ""
            cells = [f"{c[k]:.1f}" for k in CLASSES]
            lines.append(table_row([variant, precision, f"{r['wall_ms_per_step']:.1f}", shown, *cells,
                                    f"{sum(c.values()):.1f}"]))  # fmt: skip
    return [*lines, ""]


def top_ops_table(steps: dict[str, Any]) -> list[str]:
    lines = [
        f"## The {TOP} costliest ops of each step",
        "",
        table_row(["variant", "precision", "class", "op", "layer", "ms/step"]),
        table_row(["---"] * 5 + ["--:"]),
    ]
    for variant, v in steps.items():
        for precision, r in v["precisions"].items():
            for op in r["top_ops"][:TOP]:
                lines.append(table_row([variant, precision, op["class"], f"`{op['op']}`", op["layer"],
                                        f"{op['ms_per_step']:.1f}"]))  # fmt: skip
    return [*lines, ""]


def onednn_table(steps: dict[str, Any]) -> list[str]:
    runs = {(variant, p): r for variant, v in steps.items() for p, r in v.get("onednn", {}).items()}
    if not runs:
        return []
    isas = sorted({r["isa"] or "?" for r in runs.values()})
    lines = [
        "## oneDNN kernels (ONEDNN_VERBOSE=1)",
        "",
        f"ISA oneDNN dispatched to: {', '.join(isas)}. Times are oneDNN's own per primitive, with the verbose log "
        "on (slower than the profiled steps); warm-up steps included.",
        "",
        table_row(
            ["variant", "precision", "primitive", "implementation", "propagation", "type", "calls/step", "ms/step"]
        ),  # fmt: skip
        table_row(["---"] * 6 + ["--:", "--:"]),
    ]
    for (variant, precision), r in runs.items():
        for k in r["kernels"][:TOP]:
            lines.append(table_row([variant, precision, k["primitive"], f"`{k['implementation']}`", k["propagation"],
                                    k["type"], k["calls_per_step"], f"{k['ms_per_step']:.1f}"]))  # fmt: skip
    return [*lines, ""]


def stage_table(stages: dict[str, Any], run: dict[str, Any]) -> list[str]:
    categories = stages["categories"]
    lines = [
        "## The study's stages (seconds)",
        "",
        measured(run),
        "",
        stages["note"],
        "",
        table_row(["stage", "wall", *categories]),
        table_row(["---", *["--:"] * (len(categories) + 1)]),
    ]
    for name, s in [*stages["stages"].items(), ("**total**", stages["total"])]:
        lines.append(table_row([name, f"{s['wall']:.1f}", *(f"{s['split'].get(c, 0):.1f}" for c in categories)]))
    lines += ["", *stages.get("summary", []), ""]
    return lines


def markdown(results: dict[str, Any]) -> str:
    lines = header(results["machine"])
    steps = results.get("steps")
    if steps:
        lines += class_table(steps, results["steps_run"]) + top_ops_table(steps) + onednn_table(steps)
    if "stages" in results:
        lines += stage_table(results["stages"], results["stages_run"])
    return "\n".join(lines).rstrip() + "\n"
