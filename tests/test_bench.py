"""The benchmarks' parts that compute or record, not their timings: what every results file says of its run (commit,
command, settings, machine), and the throughput benchmark's image counts, override scoping, `time -v` parsing, its
verdicts, and a variant process that fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF, REPO

from catdog.common.machine import words
from catdog.settings.params import compose_config

# On the path, so that the benchmark's spawned child processes import it by name as this process does.
sys.path.insert(0, str(REPO / "bench"))
import outputs  # noqa: E402
import throughput as bench  # noqa: E402

TIME_LOG = """\
\tCommand being timed: "uv run dvc repro --force"
\tElapsed (wall clock) time (h:mm:ss or m:ss): {wall}
\tMaximum resident set size (kbytes): {rss}
"""


def git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True)


def test_a_results_file_names_its_commit_command_settings_and_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    git(checkout, "init", "-q")
    (checkout / "a.txt").write_text("one\n")
    git(checkout, "add", "a.txt")
    git(checkout, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short=10", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    monkeypatch.setattr(outputs, "ROOT", checkout)
    settings = {"precision": "float32", "batch size": 16, "threads": 2}
    run = outputs.run_record("bench/x.py", ["--steps", "3"], settings, 2, "float32")
    outputs.save(tmp_path / "out", "x", "A title", {"run": run, "rows": [1]}, "| a |\n|---|\n| 1 |\n")
    text = (tmp_path / "out" / "x.md").read_text()
    assert text.startswith("# A title\n\n") and text.endswith("| a |\n|---|\n| 1 |\n")
    assert f"- commit: {head}\n" in text
    assert "- command: `uv run --locked python bench/x.py --steps 3`" in text
    assert "- settings: precision: float32; batch size: 16; threads: 2\n" in text
    machine = json.loads((tmp_path / "out" / "x.json").read_text())["run"]["machine"]
    assert (machine["threads"], machine["precision"]) == (2, "float32") and len(machine["id"]) == 10
    assert f"- machine: {words(machine)}\n" in text and machine["id"] in text
    (checkout / "a.txt").write_text("two\n")  # an uncommitted change is said
    assert outputs.commit() == f"{head} with uncommitted changes"
    monkeypatch.setattr(outputs, "ROOT", tmp_path / "nowhere")
    assert outputs.commit() == "unknown (not a git checkout)"


def test_images_seen_counts_the_short_last_batch_of_each_pass() -> None:
    # 20 images in batches of 8 are 3 steps a pass: 8 + 8 + 4.
    assert bench.images_seen(3, images_per_pass=20, batch_size=8) == 20
    assert bench.images_seen(4, images_per_pass=20, batch_size=8) == 28
    assert bench.images_seen(7, images_per_pass=20, batch_size=8) == 48


def test_scoped_overrides_apply_to_their_variant_only() -> None:
    given = ["trainer.epochs=1", "transfer:model.net.weights=null", "scaled:trainer.batch_size=8"]
    assert bench.overrides_for("transfer", given) == ["trainer.epochs=1", "model.net.weights=null"]
    assert bench.overrides_for("baseline", given) == ["trainer.epochs=1"]
    assert bench.variant_config("scaled", given).trainer.batch_size == 8


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


STUDY_FLOAT32 = {"setting": "float32", "resolved": "float32"}


def variant(name: str, rates: tuple[float, ...], precision: dict = STUDY_FLOAT32, rss: float = 1200.0) -> dict:
    """A variant's summary from images/s of its cells (project, reference, bound f32, bound bf16)."""
    cells = {c: {"images": 100, "seconds": 1.0, "images_per_s": r} for c, r in zip(bench.CELLS, rates, strict=True)}
    summary = bench.summarize(compose_config(CONF, [f"variant={name}"]), 63, cells, precision)
    return summary | {"threads": 2, "peak_rss_mib": rss}


def rows_of(table: str) -> dict[str, str]:
    return {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}


def test_the_table_fails_a_slow_cnn_and_exempts_transfer_from_the_speed_up() -> None:
    variants = {
        "baseline": variant("baseline", (700, 250, 710, 710)),
        "augmented": variant("augmented", (600, 250, 700, 700), rss=1300.0),
        "transfer": variant("transfer", (90, 88, 91, 91), rss=2200.0),
    }
    rows = rows_of(bench.markdown(variants, repro=None))
    assert rows["baseline"].startswith("| baseline | cnn | 96 | 16 | 63 | 2 | float32 | 700.0 | 250.0 |")
    assert "| 2.80 | pass | 0.99 | pass |" in rows["baseline"]
    assert "| 2.40 | **FAIL** | 0.86 | **FAIL** |" in rows["augmented"]
    assert "| 1.02 | n/a | 0.99 | pass |" in rows["transfer"]
    assert "| 2200 MiB | ≤ 4096 MiB | pass |" in rows["benchmark peak RSS (largest variant)"]
    assert "not measured" in rows["`dvc repro` wall time and max RSS"]


def test_a_c_compares_with_the_bound_in_the_projects_precision() -> None:
    v = variant("baseline", (1100, 250, 700, 1150), {"setting": "auto", "resolved": "bfloat16"})
    assert v["a/c"] == round(1100 / 1150, 3) and v["pass_a/c"]
    assert v["a/b"] == 4.4 and v["bound_bf16_over_f32"] == round(1150 / 700, 3)
    assert "| bfloat16 (auto) | 1100.0 | 250.0 | 700.0 | 1150.0 | 1.64 |" in bench.markdown({"baseline": v}, None)


def test_the_study_log_is_judged_against_its_wall_time_and_memory_targets() -> None:
    variants = {"baseline": variant("baseline", (700, 250, 710, 710))}
    rows = rows_of(bench.markdown(variants, {"wall_s": 901.0, "max_rss_mib": 2300.0}))
    assert "| 15:01.0 | ≤ 15 min | **FAIL** |" in rows["`dvc repro` wall time"]
    assert "| 2300 MiB | ≤ 4096 MiB | pass |" in rows["`dvc repro` max RSS"]
    rows = rows_of(bench.markdown(variants, {"wall_s": 899.5, "max_rss_mib": 4097.0}))
    assert "| 14:59.5 | ≤ 15 min | pass |" in rows["`dvc repro` wall time"]
    assert "| **FAIL** |" in rows["`dvc repro` max RSS"]


@pytest.mark.slow
def test_a_variant_whose_process_fails_stops_the_benchmark_naming_it() -> None:
    args = bench.parse_args(["--variants", "baseline", "--override", "nosuch.key=1"])
    with pytest.raises(SystemExit, match=r"benchmark of baseline failed: .*Could not override 'nosuch.key'"):
        bench.run_isolated("baseline", args)


ONEDNN_CHECK = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from outputs import training_onednn
from throughput import variant_config
configs = {v: variant_config(v, [f"trainer.onednn={s}"]) for v, s in json.loads(sys.argv[2]).items()}
state = training_onednn(configs)
print(json.dumps([state, os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "tensorflow" in sys.modules]))
"""


def onednn_in_a_fresh_process(settings: dict[str, str], **env: str) -> subprocess.CompletedProcess:
    """`training_onednn` for variants with these `trainer.onednn` settings, in a process without TensorFlow."""
    environ = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "CATDOG_ONEDNN_SET")}
    argv = [sys.executable, "-c", ONEDNN_CHECK, str(REPO / "bench"), json.dumps(settings)]
    return subprocess.run(argv, capture_output=True, text=True, env={**environ, **env}, cwd=REPO, timeout=120)


@pytest.mark.parametrize("setting", ["on", "off"])
def test_a_benchmark_runs_onednn_as_training_would_before_tensorflow_is_imported(setting: str) -> None:
    done = onednn_in_a_fresh_process({"baseline": setting, "scaled": setting})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == [f"{setting} (setting)", "1" if setting == "on" else "0", False]


def test_variants_that_train_with_different_onednn_states_are_benchmarked_apart() -> None:
    done = onednn_in_a_fresh_process({"baseline": "on", "augmented": "on", "scaled": "off"})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "scaled train with oneDNN off and baseline with it on here (trainer.onednn): "
        "benchmark them apart with --variants"
    )
    users = onednn_in_a_fresh_process({"baseline": "on", "scaled": "off"}, TF_ENABLE_ONEDNN_OPTS="0")
    assert json.loads(users.stdout) == ["off (environment)", "0", False]  # the user's variable wins, for every one


def test_a_results_file_names_the_onednn_state_its_children_ran() -> None:
    settings = {"precision": "float32", "batch size": 16, "threads": 2}
    on, off = (
        outputs.run_record("bench/x.py", [], settings, 2, "float32", state)["machine"] for state in (True, False)
    )
    assert "oneDNN on (TF_ENABLE_ONEDNN_OPTS=1)" in words(on) and "oneDNN off" in words(off) and on["id"] != off["id"]
