"""The throughput benchmark: image counts, override scoping, `time -v` parsing, the verdicts, and a variant process that dies."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import CONF, REPO
from tqdm import tqdm

from catdog.settings.params import compose_config

# On the path, so that the benchmark's spawned child processes import it by name as this process does.
sys.path.insert(0, str(REPO / "bench"))
import throughput as bench  # noqa: E402

TIME_LOG = """\
\tCommand being timed: "uv run dvc repro --force"
\tElapsed (wall clock) time (h:mm:ss or m:ss): {wall}
\tMaximum resident set size (kbytes): {rss}
"""


def test_images_seen_counts_the_short_last_batch_of_each_pass() -> None:
    # 20 images in batches of 8 are 3 steps a pass: 8 + 8 + 4.
    assert bench.images_seen(3, images_per_pass=20, batch_size=8) == 20
    assert bench.images_seen(4, images_per_pass=20, batch_size=8) == 28
    assert bench.images_seen(7, images_per_pass=20, batch_size=8) == 48


def test_scoped_overrides_apply_to_their_variant_only() -> None:
    given = ["trainer.epochs=1", "transfer:model.net.weights=null", "scaled:trainer.batch_size=8"]
    assert bench.overrides_for("transfer", given) == ["trainer.epochs=1", "model.net.weights=null"]
    assert bench.overrides_for("baseline", given) == ["trainer.epochs=1"]


@pytest.mark.parametrize("wall,seconds", [("12:49.70", 769.7), ("1:02:03", 3723.0)])
def test_repro_stats_reads_the_last_gnu_time_report(tmp_path: Path, wall: str, seconds: float) -> None:
    log = tmp_path / "repro.log"
    log.write_text(
        "stage output\n" + TIME_LOG.format(wall="0:01.00", rss=1024) + TIME_LOG.format(wall=wall, rss=2357248)
    )
    assert bench.repro_stats(log) == {"wall_s": seconds, "max_rss_mib": 2302.0}


def test_repro_stats_names_a_log_without_a_report(tmp_path: Path) -> None:
    log = tmp_path / "repro.log"
    log.write_text("dvc repro printed this, but GNU time did not run\n")
    with pytest.raises(SystemExit, match=f"{log}: no GNU"):
        bench.repro_stats(log)


STUDY_FLOAT32 = {"setting": "float32", "source": "study", "resolved": "float32"}


def cells(project: float, reference: float, bound: float, bound_bf16: float | None = None) -> dict[str, dict]:
    rates = (project, reference, bound, bound if bound_bf16 is None else bound_bf16)
    return {c: {"images": 100, "seconds": 1.0, "images_per_s": r} for c, r in zip(bench.CELLS, rates, strict=True)}


def test_the_table_fails_a_slow_cnn_and_exempts_transfer_from_the_speed_up() -> None:
    variants = {
        "baseline": bench.summarize(
            compose_config(CONF, ["variant=baseline"]), 63, 10, cells(700, 250, 710), STUDY_FLOAT32
        ),
        "augmented": bench.summarize(
            compose_config(CONF, ["variant=augmented"]), 63, 10, cells(600, 250, 700), STUDY_FLOAT32
        ),
        "transfer": bench.summarize(
            compose_config(CONF, ["variant=transfer"]), 63, 10, cells(90, 88, 91), STUDY_FLOAT32
        ),
    }
    for name, rss in zip(variants, (1200.0, 1300.0, 2200.0), strict=True):
        variants[name]["peak_rss_mib"] = rss
    process = bench.process_summary(variants, repro=None)
    table = bench.markdown({"meta": bench.meta(bench.parse_args([])), "variants": variants, "process": process})
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "| 2.80 | pass | 0.99 | pass |" in rows["baseline"]
    assert "| 2.40 | **FAIL** | 0.86 | **FAIL** |" in rows["augmented"]
    assert "| 1.02 | n/a | 0.99 | pass |" in rows["transfer"]
    assert process["peak_rss_mib"] == 2200.0 and process["pass_peak_rss"]
    assert "not measured" in rows["`dvc repro` wall time"]


@pytest.mark.slow
def test_a_variant_whose_process_dies_stops_the_benchmark_naming_it(capfd: pytest.CaptureFixture[str]) -> None:
    args = bench.parse_args(["--variants", "baseline", "--override", "nosuch.key=1"])
    with (
        tqdm(total=1, disable=True) as bar,
        pytest.raises(SystemExit, match=r"benchmark of baseline died \(exit code 1\)"),
    ):
        bench.run_isolated("baseline", args, bar)
    assert "Could not override 'nosuch.key'" in capfd.readouterr().err


def test_a_c_compares_with_the_bound_in_the_projects_precision() -> None:
    bf16 = {"setting": "auto", "source": "study", "resolved": "bfloat16"}
    v = bench.summarize(compose_config(CONF, ["variant=baseline"]), 63, 10, cells(1100, 250, 700, 1150), bf16)
    assert v["project_over_bound"] == round(1100 / 1150, 3) and v["pass_project_over_bound"]
    assert v["project_over_reference"] == 4.4 and v["bound_bfloat16_over_float32"] == round(1150 / 700, 3)
    v["peak_rss_mib"] = 1200.0
    process = bench.process_summary({"baseline": v}, repro=None)
    table = bench.markdown({"meta": bench.meta(bench.parse_args([])), "variants": {"baseline": v}, "process": process})
    assert "| bfloat16 (auto) | 1100.0 | 250.0 | 700.0 | 1150.0 | 1.64 |" in table


def test_two_repro_logs_judge_the_study_wall_time_after_over_before() -> None:
    variants = {"baseline": {"peak_rss_mib": 1200.0}}
    after, before = {"wall_s": 600.0, "max_rss_mib": 2300.0}, {"wall_s": 900.0, "max_rss_mib": 2300.0}
    process = bench.process_summary(variants, after, before)
    assert process["repro_wall_ratio"] == 0.667 and process["pass_repro_wall"]
    assert not bench.process_summary(variants, {**after, "wall_s": 700.0}, before)["pass_repro_wall"]
    # One log: the absolute target, 15 min.
    assert not bench.process_summary(variants, {**after, "wall_s": 901.0}, None)["pass_repro_wall"]


def test_a_baseline_log_needs_the_log_it_is_the_baseline_of(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--baseline-repro-log", str(tmp_path / "before.log")])


def test_tables_are_rewritten_from_an_earlier_run_with_logs_timed_later(tmp_path: Path) -> None:
    v = bench.summarize(compose_config(CONF, ["variant=baseline"]), 63, 10, cells(700, 250, 710), STUDY_FLOAT32)
    v["peak_rss_mib"] = 1200.0
    earlier = {
        "meta": bench.meta(bench.parse_args([])),
        "targets": {},
        "variants": {"baseline": v},
        "process": bench.process_summary({"baseline": v}, repro=None),
    }
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    logs = []
    for name, wall in (("after.log", "6:00.00"), ("before.log", "10:00.00")):
        logs.append(tmp_path / name)
        logs[-1].write_text(
            f"\tElapsed (wall clock) time (h:mm:ss or m:ss): {wall}\n\tMaximum resident set size (kbytes): 2000000\n"
        )
    bench.main(
        [
            "--from-json",
            str(tmp_path / "earlier.json"),
            "--repro-log",
            str(logs[0]),
            "--baseline-repro-log",
            str(logs[1]),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    rewritten = json.loads((tmp_path / "out" / "throughput.json").read_text())
    assert rewritten["variants"] == earlier["variants"] and rewritten["process"]["repro_wall_ratio"] == 0.6
    assert "tables rewritten by" in (tmp_path / "out" / "throughput.md").read_text()
