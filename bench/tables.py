"""The results as Markdown: one row per variant, then memory and the study's wall time against their targets."""

from __future__ import annotations

from typing import Any

from plan import CELLS
from repro_log import clock
from results import TARGETS


def verdict(passed: bool | None) -> str:
    """A pass/fail cell."""
    return "n/a" if passed is None else ("pass" if passed else "**FAIL**")


def table_row(cells: list[Any]) -> str:
    """One Markdown table row."""
    return "| " + " | ".join(map(str, cells)) + " |"


def precision_label(precision: dict[str, str]) -> str:
    """The project cell's precision, and why where it is not simply the study's setting: `bfloat16 (auto)`,
    `float32 (--precision)`."""
    why = ["auto"] if precision["setting"] == "auto" else []
    why += ["--precision"] if precision["source"] != "study" else []
    return precision["resolved"] + (f" ({', '.join(why)})" if why else "")


def variant_row(name: str, v: dict[str, Any]) -> str:
    """One variant's row of the throughput table."""
    rates = [f"{v['pipelines'][cell]['images_per_s']:.1f}" for cell in CELLS]
    reference = "float64 conv" if v["reference_float64_first_conv"] else "project model"
    return table_row(
        [name, v["model"], v["image_size"], v["batch_size"], v["steps"], precision_label(v["project_precision"])]
        + [*rates, f"{v['bound_bfloat16_over_float32']:.2f}", reference, f"{v['peak_rss_mib']:.0f}"]
        + [f"{v['project_over_reference']:.2f}", verdict(v["pass_project_over_reference"])]
        + [f"{v['project_over_bound']:.2f}", verdict(v["pass_project_over_bound"])]
    )


def repro_rows(p: dict[str, Any]) -> list[list[str]]:
    """The `dvc repro` rows: wall time against 15 min (one log) or after/before against 0.75 (two), and max RSS;
    "not measured" without a log."""
    rss_limit = f"≤ {TARGETS['max_rss_mib']:.0f} MiB"
    wall_limit = f"≤ {TARGETS['max_study_wall_s'] / 60:.0f} min"
    repro, baseline = p["repro"], p.get("baseline_repro")
    if repro is None:
        return [
            [f"`dvc repro` {measure}", "—", limit, "not measured (`--repro-log`)"]
            for measure, limit in (("wall time", wall_limit), ("max RSS", rss_limit))
        ]
    rss = ["`dvc repro` max RSS", f"{repro['max_rss_mib']:.0f} MiB", rss_limit, verdict(p["pass_repro_rss"])]
    if baseline is None:
        return [["`dvc repro` wall time", clock(repro["wall_s"]), wall_limit, verdict(p["pass_repro_wall"])], rss]
    ratio_limit = f"≤ {TARGETS['max_study_wall_ratio']}"
    return [
        ["`dvc repro` wall time, before (`--baseline-repro-log`)", clock(baseline["wall_s"]), "—", "—"],
        ["`dvc repro` wall time", clock(repro["wall_s"]), "—", "—"],
        [
            "`dvc repro` wall time after/before",
            f"{p['repro_wall_ratio']:.2f}",
            ratio_limit,
            verdict(p["pass_repro_wall"]),
        ],
        rss,
    ]


def process_rows(p: dict[str, Any]) -> list[str]:
    """Rows of the memory and wall-time table."""
    rss_limit = f"≤ {TARGETS['max_rss_mib']:.0f} MiB"
    peak = [
        "benchmark peak RSS (largest variant)",
        f"{p['peak_rss_mib']:.0f} MiB",
        rss_limit,
        verdict(p["pass_peak_rss"]),
    ]
    return [table_row(row) for row in [peak, *repro_rows(p)]]


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown: one row per variant, then memory and wall time against their targets."""
    m = results["meta"]
    t = TARGETS
    bf16 = f"bfloat16 native ({m['native_bfloat16']})" if m["native_bfloat16"] else "bfloat16 emulated"
    lines = [
        "# Training throughput (images/s)",
        "",
        f"{m['created']} · {m['device']} · {bf16} · TensorFlow {m['tensorflow']} · Keras {m['keras']} "
        f"· `{m['command']}`",
        "",
        "| variant | model | size | batch | steps | a's precision | a: project | b: reference | c: bound f32 "
        "| c: bound bf16 | c bf16/f32 | b's model | peak RSS MiB "
        f"| a/b | a/b ≥ {t['min_project_over_reference']} | a/c | a/c ≥ {t['min_project_over_bound']} |",
        "|---|---|--:|--:|--:|---|--:|--:|--:|--:|--:|---|--:|--:|---|--:|---|",
        *(variant_row(name, v) for name, v in results["variants"].items()),
        "",
        "| measure | value | target | result |",
        "|---|--:|---|---|",
        *process_rows(results["process"]),
    ]
    return "\n".join(lines) + "\n"
