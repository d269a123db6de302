"""The whole study through DVC on tiny generated data: every stage's outputs, MLflow runs, champion, diffs."""

from __future__ import annotations

import html
import json
import re
import sys
import time
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
import records
import yaml
from conftest import TINY_COUNTS, TINY_SIZE
from headless import check_page, external_references, find_browser
from mlflow import MlflowClient
from tiny_study import VARIANTS, TinyStudy, dvc_status, edit_yaml, sh

from catdog.data.dataset import load_split
from catdog.report.explanations import CORRECT_PER_CLASS, MISCLASSIFIED_CAP
from catdog.report.sections import TITLES

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("pipeline")]


@pytest.fixture(scope="module")
def project(built_study: TinyStudy) -> tuple[Path, dict[str, str]]:
    """The tiny study, built once per session (conftest.built_study); these tests change it as they go."""
    return built_study.project, built_study.env


def test_every_stage_writes_its_outputs(project) -> None:
    root, _ = project
    for split in ("train", "val", "test"):
        assert (root / "data/split" / f"{split}.csv").is_file()
    report = json.loads((root / "metrics/data.json").read_text())
    assert report["counts"]["test"] == {"cats": TINY_COUNTS["validation"] // 2, "dogs": TINY_COUNTS["validation"] // 2}
    assert (root / "plots/data/samples.png").stat().st_size > 0
    for v in VARIANTS:  # one run per variant: the study's one seed, 42
        assert (root / "models" / f"{v}-42" / "model.keras").is_file()
        assert json.loads((root / "metrics/train" / f"{v}-42.json").read_text())["epochs_run"] == 1
        history = (root / "plots/train" / f"{v}-42" / "history.csv").read_text()
        assert (root / "plots/compare/history" / f"{v}.csv").read_text() == history
    for figure in ("confusion_matrices", "test_accuracy", "val_accuracy"):
        assert (root / "plots/compare" / f"{figure}.png").stat().st_size > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_s_run_is_recorded_in_full(project, variant: str) -> None:
    root, _ = project
    records.check_outputs(root, f"{variant}-42", epochs=1)
    records.check_run_record(study_store(root)[0], root, variant, epochs=1)


def test_a_logged_model_reloads_and_predicts_like_the_saved_one(project, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = project
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    saved = keras.models.load_model(root / "models" / "transfer-42" / "model.keras")  # its backbone nested in it
    model_uri = json.loads((root / "records" / "train" / "transfer-42.json").read_text())["mlflow"]["model_uri"]
    assert model_uri.startswith("models:/m-")
    logged = mlflow.keras.load_model(model_uri)
    val = load_split(
        root / "data/split/val.csv",
        root / "data/raw/cats_and_dogs_filtered",
        ["cats", "dogs"],
        TINY_SIZE,
        root / "data/cache",
    )
    images = val.images.astype("float32")
    np.testing.assert_allclose(
        logged.predict(images, verbose=0), saved.predict(images, verbose=0), rtol=1e-5, atol=1e-5
    )
    signature = mlflow.models.get_model_info(model_uri).signature
    assert list(signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, TINY_SIZE, TINY_SIZE, 3]


def test_leaderboard_ranks_the_variants_and_the_majority_baseline(project) -> None:
    root, _ = project
    metrics = json.loads((root / "metrics/compare.json").read_text())
    assert set(metrics) == set(VARIANTS) | {"majority-class"}
    ranks = sorted(metrics.values(), key=lambda m: m["rank"])
    assert [m["rank"] for m in ranks] == list(range(1, len(VARIANTS) + 2))
    accuracies = [m["test_accuracy"] for m in ranks]
    assert accuracies == sorted(accuracies, reverse=True)
    assert metrics["majority-class"]["test_accuracy"] == 0.5
    board = (root / "reports/leaderboard.md").read_text()
    table = [line for line in board.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(table) == len(VARIANTS) + 1
    assert "Pairwise McNemar" in board


def test_the_report_shows_every_section_with_every_image_inline_and_is_logged_to_the_compare_run(project) -> None:
    root, _ = project
    page = (root / "reports/study.html").read_text(encoding="utf-8")
    assert [t for t in TITLES.values() if f"<h2>{html.escape(t)}</h2>" not in page] == []
    assert external_references(page) == []
    images = re.findall(r"<img\b[^>]*>", page)
    assert len(images) >= 10 and all(re.search(r'\bsrc="data:image/(png|jpeg);base64,', i) for i in images)
    details = json.loads((root / "reports/compare.json").read_text())
    matrix = details["models"][details["champion"]]["confusion_matrix"]
    wrong = details["n_test"] - sum(matrix[i][i] for i in range(len(matrix)))
    mistakes = page.split('<section id="mistakes">')[1].split("</section>")[0]
    assert mistakes.count('<div class="card">') == min(wrong, MISCLASSIFIED_CAP)
    assert f"got {wrong} of {details['n_test']} test images wrong" in mistakes
    correct = page.split('<section id="correct">')[1].split("</section>")[0]
    assert correct.count('<div class="card">') == sum(min(CORRECT_PER_CLASS, matrix[c][c]) for c in range(len(matrix)))
    assert details["provenance"]["seconds"] > 0 and f"{details['champion']} " in page.split('class="summary">')[1][:200]
    client, _ = study_store(root)
    assert "study.html" in [a.path for a in client.list_artifacts(details["provenance"]["mlflow"]["run_id"])]
    assert client.get_run(details["provenance"]["mlflow"]["run_id"]).info.run_name == "compare"


@pytest.mark.requires("chromium")
def test_the_report_opens_in_a_headless_browser_without_an_error(project) -> None:
    root, _ = project
    assert check_page(root / "reports/study.html", find_browser()) == []


def study_store(root: Path) -> tuple[MlflowClient, str]:
    """A client of the project's default MLflow store, and the id of the study's experiment in it."""
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    return client, client.get_experiment_by_name("catdog-study").experiment_id


def test_runs_land_in_the_default_store_and_the_champion_is_registered(project) -> None:
    root, _ = project
    client, experiment_id = study_store(root)
    runs = client.search_runs([experiment_id])
    names = sorted(r.info.run_name for r in runs)
    assert names == sorted([*(f"{v}-42" for v in VARIANTS), "compare"])
    assert all(r.data.tags["seed"] == "42" for r in runs if r.info.run_name != "compare")
    assert all(r.info.status == "FINISHED" for r in runs)
    champion = client.get_model_version_by_alias("catdog", "champion")
    details = json.loads((root / "reports/compare.json").read_text())
    assert champion.tags["variant"] == details["champion"] and details["champion_alias"] == "champion"
    trained = json.loads((root / "records" / "train" / f"{details['champion']}-42.json").read_text())["mlflow"]
    assert (champion.run_id, champion.source) == (trained["run_id"], trained["classifier_uri"])
    assert len(client.search_logged_models([experiment_id])) == 2 * len(VARIANTS)  # Keras flavour + classifier
    assert float(champion.tags["test_accuracy"]) == pytest.approx(
        details["models"][details["champion"]]["accuracy"], abs=1e-4
    )


def test_a_second_repro_does_nothing_and_a_param_change_reruns_its_stage_and_the_ranking_and_shows_in_diffs(
    project,
) -> None:
    root, env = project
    dvc = (sys.executable, "-m", "dvc")
    assert "up to date" in sh(*dvc, "status", cwd=root, env=env)
    sh("git", "add", "-A", cwd=root, env=env)
    sh("git", "commit", "-qm", "study results", cwd=root, env=env)
    edit_yaml(root / "params.yaml", lambda p: p["variants"]["baseline"]["trainer"].update(epochs=2))
    assert dvc_status(root, env) == {"train@baseline-42"}  # the one stage whose params changed
    out = sh(*dvc, "repro", cwd=root, env=env)
    assert set(re.findall(r"Running stage '([^']+)'", out)) == {"train@baseline-42", "compare", "report"}
    sh("git", "add", "-A", cwd=root, env=env)
    sh("git", "commit", "-qm", "baseline: 2 epochs", cwd=root, env=env)
    diff = json.loads(sh(*dvc, "metrics", "diff", "HEAD~1", "--json", cwd=root, env=env))
    change = diff["metrics/train/baseline-42.json"]["epochs_run"]
    assert (change["old"], change["new"]) == (1, 2)
    params = json.loads(sh(*dvc, "params", "diff", "HEAD~1", "--json", cwd=root, env=env))
    change = params["params.yaml"]["variants.baseline.trainer.epochs"]
    assert (change["old"], change["new"]) == (1, 2)


def test_an_ad_hoc_run_leaves_the_study_outputs_alone(project) -> None:
    root, env = project
    before = {p: p.read_bytes() for p in (root / "metrics").rglob("*.json")}
    out = sh(sys.executable, "src/train.py", "variant=baseline", "trainer.epochs=2", cwd=root, env=env)
    assert "written to outputs/" in out
    assert len(list((root / "outputs").rglob("model.keras"))) == 1
    assert {p: p.read_bytes() for p in (root / "metrics").rglob("*.json")} == before
    assert dvc_status(root, env) == set()


def test_a_touched_variant_file_makes_only_its_train_stage_stale(project) -> None:
    root, env = project
    variant_file = root / "conf/variant/transfer.yaml"
    original = variant_file.read_text()
    try:
        variant_file.write_text(original + "# a comment\n")
        assert dvc_status(root, env) == {"train@transfer-42"}
    finally:
        variant_file.write_text(original)
    assert dvc_status(root, env) == set()


def test_queued_experiments_run_two_at_once_each_in_its_own_runs_and_one_applied_is_the_setting(project) -> None:
    """`dvc exp run --queue` of a train stage twice, then `dvc queue start --jobs 2`: both train at the same time,
    each tracked in MLflow under its experiment's name, each TensorFlow on the threads CATDOG_THREADS gives it. After
    `dvc exp apply`, the config a plain `python src/train.py` composes has the experiment's value (params.yaml is its
    one source), and what depends on the one stage it ran is stale."""
    root, env = project
    env = {**env, "CATDOG_THREADS": "1"}
    dvc = (sys.executable, "-m", "dvc")
    # Epoch counts no earlier test ran: DVC would restore those stages from its run cache instead of training.
    names = ["queued-4-epochs", "queued-5-epochs"]
    for name, epochs in zip(names, (4, 5), strict=True):
        sh(
            *dvc,
            "exp",
            "run",
            "--queue",
            "-n",
            name,
            "-S",
            f"variants.baseline.trainer.epochs={epochs}",
            "train@baseline-42",  # the stage the queue is about: compare and report are tested elsewhere
            cwd=root,
            env=env,
        )
    sh(*dvc, "queue", "start", "--jobs", "2", cwd=root, env=env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = sh(*dvc, "queue", "status", cwd=root, env=env)
        done = [line for line in status.splitlines() if any(n in line for n in names) and "Success" in line]
        if len(done) == 2 or "Failed" in status:
            break
        time.sleep(5)  # each `dvc queue status` is a Python start of its own
    assert len(done) == 2, status + "\n" + sh(*dvc, "queue", "logs", names[0], cwd=root, env=env)[-3000:]
    client, experiment_id = study_store(root)
    spans = []
    for name in names:
        tagged = client.search_runs([experiment_id], f"tags.dvc_experiment = '{name}'")
        assert [r.info.run_name for r in tagged] == ["baseline-42"]
        assert tagged[0].data.tags["tf_threads"] == "1"
        spans.append((min(r.info.start_time for r in tagged), max(r.info.end_time for r in tagged)))
    (first, second) = sorted(spans)
    assert second[0] < first[1], f"the two experiments ran one after the other: {spans}"
    shown = sh(*dvc, "exp", "show", "--csv", cwd=root, env=env)
    assert all(any(name in row for row in shown.splitlines()) for name in names)

    committed = yaml.safe_load((root / "params.yaml").read_text())["variants"]["baseline"]["trainer"]["epochs"]
    sh(*dvc, "exp", "apply", names[0], cwd=root, env=env)
    composed = sh(
        sys.executable,
        "-c",
        "from pathlib import Path; from catdog.settings.params import compose_config; "
        "print(compose_config(Path('conf'), ['variant=baseline']).trainer.epochs)",
        cwd=root,
        env={**env, "PYTHONPATH": str(root / "src")},
    )
    assert committed != 4 and composed.strip() == "4"
    assert dvc_status(root, env) == {"compare", "report"}
    sh("git", "checkout", "--", ".", cwd=root, env=env)  # back to the commit, as a teammate's clone would be
    sh(*dvc, "checkout", "--force", cwd=root, env=env)
    assert dvc_status(root, env) == set()


def test_an_experiment_with_a_new_seed_trains_only_its_runs_and_moves_the_challenger_not_the_champion(project) -> None:
    """`dvc exp run -S 'study.seeds=[42,7]'` (baseline only): only the seed-7 stage trains (seed 42's is up to date);
    the experiment moves @challenger, not @champion; the leaderboard, metrics and report show the variant over both
    seeds, its runs in MLflow tagged with the experiment and their seed, and `dvc exp show` has the test accuracies."""
    root, env = project
    dvc = (sys.executable, "-m", "dvc")
    assert dvc_status(root, env) == set()
    client, experiment_id = study_store(root)
    champion = client.get_model_version_by_alias("catdog", "champion").version
    experiment = ("exp", "run", "-n", "two-seeds", "-S", "study.variants=[baseline]", "-S", "study.seeds=[42,7]")
    out = sh(*dvc, *experiment, cwd=root, env=env)
    assert set(re.findall(r"Running stage '([^']+)'", out)) == {"train@baseline-7", "compare", "report"}
    assert client.get_model_version_by_alias("catdog", "champion").version == champion, "an experiment moved @champion"
    assert int(client.get_model_version_by_alias("catdog", "challenger").version) > int(champion)
    board = (root / "reports/leaderboard.md").read_text()
    assert "| sd | seed 42 | seed 7 |" in board and "trained with 2 seeds (42, 7)" in board
    metrics = json.loads((root / "metrics/compare.json").read_text())
    assert set(metrics) == {"baseline", "majority-class"}
    per_seed = [json.loads((root / "metrics/train" / f"baseline-{s}.json").read_text()) for s in (42, 7)]
    details = json.loads((root / "reports/compare.json").read_text())
    assert details["validation"]["baseline"]["best_val_accuracy"] == pytest.approx(
        sum(m["best_val_accuracy"] for m in per_seed) / 2
    )
    assert {metrics["baseline"]["test_accuracy_seed_42"], metrics["baseline"]["test_accuracy_seed_7"]} == {
        details["runs"][f"baseline-{s}"]["test_accuracy"] for s in (42, 7)
    }
    page = (root / "reports/study.html").read_text(encoding="utf-8")
    assert "seed 7" in page and "train@baseline-7" in page
    tagged = client.search_runs([experiment_id], "tags.dvc_experiment = 'two-seeds'")
    assert sorted(r.info.run_name for r in tagged) == ["baseline-7", "compare"]
    assert {r.data.tags["seed"] for r in tagged if r.info.run_name != "compare"} == {"7"}
    header, *rows = sh(*dvc, "exp", "show", "--csv", cwd=root, env=env).splitlines()
    assert all(f"{v}.test_accuracy" in header.split(",") for v in VARIANTS)  # the committed study's columns
    assert any("two-seeds" in row for row in rows)
