"""The throughput benchmark: image counts, override scoping, `time -v` parsing, the verdicts, and a variant process that dies."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tqdm import tqdm

from catdog.study import compose_config
from conftest import CONF, REPO


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
    log.write_text("stage output\n" + TIME_LOG.format(wall="0:01.00", rss=1024) + TIME_LOG.format(wall=wall, rss=2357248))
    assert bench.repro_stats(log) == {"wall_s": seconds, "max_rss_mib": 2302.0}


def test_repro_stats_names_a_log_without_a_report(tmp_path: Path) -> None:
    log = tmp_path / "repro.log"
    log.write_text("dvc repro printed this, but GNU time did not run\n")
    with pytest.raises(SystemExit, match=f"{log}: no GNU"):
        bench.repro_stats(log)


def cells(project: float, reference: float, bound: float) -> dict[str, dict[str, float]]:
    return {p: {"images": 100, "seconds": 1.0, "images_per_s": r} for p, r in zip(bench.PIPELINES, (project, reference, bound))}


def test_the_table_fails_a_slow_cnn_and_exempts_transfer_from_the_speed_up() -> None:
    variants = {
        "baseline": bench.summarize(compose_config(CONF, ["variant=baseline"]), 63, 10, cells(700, 250, 710)),
        "augmented": bench.summarize(compose_config(CONF, ["variant=augmented"]), 63, 10, cells(600, 250, 700)),
        "transfer": bench.summarize(compose_config(CONF, ["variant=transfer"]), 63, 10, cells(90, 88, 91)),
    }
    for name, rss in zip(variants, (1200.0, 1300.0, 2200.0)):
        variants[name]["peak_rss_mib"] = rss
    process = bench.process_summary(variants, repro=None)
    table = bench.markdown({"meta": bench.meta(bench.parse_args([])), "variants": variants, "process": process})
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "| 2.80 | pass | 0.99 | pass |" in rows["baseline"]
    assert "| 2.40 | **FAIL** | 0.86 | **FAIL** |" in rows["augmented"]
    assert "| 1.02 | n/a | 0.99 | pass |" in rows["transfer"]
    assert process["peak_rss_mib"] == 2200.0 and process["pass_peak_rss"]
    assert "not measured" in rows["`dvc repro` wall time"]


def test_a_variant_whose_process_dies_stops_the_benchmark_naming_it(capfd: pytest.CaptureFixture[str]) -> None:
    args = bench.parse_args(["--variants", "baseline", "--override", "nosuch.key=1"])
    with tqdm(total=1, disable=True) as bar, pytest.raises(SystemExit, match=r"benchmark of baseline died \(exit code 1\)"):
        bench.run_isolated("baseline", args, bar)
    assert "Could not override 'nosuch.key'" in capfd.readouterr().err
