"""The whole study through DVC on tiny generated data: every stage's outputs, MLflow runs, champion, diffs."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
import records
import yaml
from conftest import REPO, TINY_COUNTS, TINY_SIZE, make_dataset, zip_folder
from headless import check_page, external_references, find_browser
from mlflow import MlflowClient

from catdog import swift
from catdog.dataset import load_split
from catdog.files import sha256_file
from catdog.report_gradcam import CORRECT_PER_CLASS, MISCLASSIFIED_CAP
from catdog.report_sections import TITLES

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("pipeline")]
VARIANTS = ["baseline", "augmented", "scaled", "transfer"]


def sh(*cmd: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def edit_yaml(path: Path, edit) -> None:
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def copy_project(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)


def shrink(project: Path, archive: Path) -> None:
    """Tiny images, tiny expected counts, the generated archive's sha256, random backbone weights, one epoch per
    variant."""

    def data(d):
        d["expected"] = {folder: {"cats": n, "dogs": n} for folder, n in TINY_COUNTS.items()}
        d["sha256"] = sha256_file(archive)
        d["download"]["backoff_s"] = 0.01
        d["min_holdout_per_class"] = 2

    edit_yaml(project / "conf/data/cats_and_dogs.yaml", data)
    edit_yaml(project / "conf/model/transfer.yaml", lambda m: m["net"].update(weights=None))
    tiny = {"epochs": 1, "image_size": TINY_SIZE, "batch_size": 8}
    edit_yaml(project / "params.yaml", lambda p: [v["trainer"].update(tiny) for v in p["variants"].values()])


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("pipeline")
    archive = zip_folder(make_dataset(root / "source"), root / "mirror.zip")
    project = root / "project"
    copy_project(project)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(
        CATDOG_DATA_MIRROR=str(archive),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )
    shrink(project, archive)
    sh("git", "init", "-q", cwd=project, env=env)
    sh("git", "add", "-A", cwd=project, env=env)
    sh("git", "commit", "-qm", "tiny study", cwd=project, env=env)
    sh(sys.executable, "-m", "dvc", "repro", cwd=project, env=env)
    return project, env


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
    saved = keras.models.load_model(root / "models" / "scaled-42" / "model.keras")
    model_uri = json.loads((root / "models" / "scaled-42" / "mlflow_run.json").read_text())["model_uri"]
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


def test_leaderboard_ranks_four_variants_and_the_majority_baseline(project) -> None:
    root, _ = project
    metrics = json.loads((root / "metrics/compare.json").read_text())
    assert set(metrics) == set(VARIANTS) | {"majority-class"}
    ranks = sorted(metrics.values(), key=lambda m: m["rank"])
    assert [m["rank"] for m in ranks] == [1, 2, 3, 4, 5]
    accuracies = [m["test_accuracy"] for m in ranks]
    assert accuracies == sorted(accuracies, reverse=True)
    assert metrics["majority-class"]["test_accuracy"] == 0.5
    board = (root / "reports/leaderboard.md").read_text()
    table = [line for line in board.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(table) == 5
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
    assert details["seconds"] > 0 and f"{details['champion']} " in page.split('class="summary">')[1][:200]
    client, _ = study_store(root)
    assert "study.html" in [a.path for a in client.list_artifacts(details["run_id"])]
    assert client.get_run(details["run_id"]).info.run_name == "compare"


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
    trained = json.loads((root / "models" / f"{details['champion']}-42" / "mlflow_run.json").read_text())
    assert (champion.run_id, champion.source) == (trained["run_id"], trained["classifier_uri"])
    assert len(client.search_logged_models([experiment_id])) == 2 * len(VARIANTS)  # Keras flavour + classifier
    assert float(champion.tags["test_accuracy"]) == pytest.approx(
        details["models"][details["champion"]]["accuracy"], abs=1e-4
    )


def test_second_repro_does_nothing_and_a_param_change_shows_in_metrics_diff(project) -> None:
    root, env = project
    dvc = (sys.executable, "-m", "dvc")
    assert "up to date" in sh(*dvc, "status", cwd=root, env=env)
    sh("git", "add", "-A", cwd=root, env=env)
    sh("git", "commit", "-qm", "study results", cwd=root, env=env)
    edit_yaml(root / "params.yaml", lambda p: p["variants"]["baseline"]["trainer"].update(epochs=2))
    assert dvc_status(root, env) == {"train@baseline-42"}  # the one stage whose params changed
    out = sh(*dvc, "repro", "train@baseline-42", cwd=root, env=env)  # compare and report: the experiment test's
    assert "Running stage 'train@baseline-42'" in out and "Running stage 'train@augmented-42'" not in out
    sh("git", "add", "-A", cwd=root, env=env)
    sh("git", "commit", "-qm", "baseline: 2 epochs", cwd=root, env=env)
    diff = json.loads(sh(*dvc, "metrics", "diff", "HEAD~1", "--json", cwd=root, env=env))
    change = diff["metrics/train/baseline-42.json"]["epochs_run"]
    assert (change["old"], change["new"]) == (1, 2)
    params = json.loads(sh(*dvc, "params", "diff", "HEAD~1", "--json", cwd=root, env=env))
    change = params["params.yaml"]["variants.baseline.trainer.epochs"]
    assert (change["old"], change["new"]) == (1, 2)


def test_an_experiment_shows_its_test_accuracies_and_once_applied_is_the_workspace_setting(project) -> None:
    """`dvc exp run -S` moves @challenger, not @champion, and `dvc exp show` has every variant's test accuracy; after
    `dvc exp apply` on a clean checkout, the config a plain `python src/train.py` composes has the experiment's
    value: params.yaml is its one source."""
    root, env = project
    dvc = (sys.executable, "-m", "dvc")
    sh("git", "add", "-A", cwd=root, env=env)
    sh("git", "commit", "-qm", "before the experiment", "--allow-empty", cwd=root, env=env)
    committed = yaml.safe_load((root / "params.yaml").read_text())["variants"]["baseline"]["trainer"]["epochs"]
    client, experiment_id = study_store(root)
    champion = client.get_model_version_by_alias("catdog", "champion").version
    sh(*dvc, "exp", "run", "-n", "three-epochs", "-S", "variants.baseline.trainer.epochs=3", cwd=root, env=env)
    assert client.get_model_version_by_alias("catdog", "champion").version == champion, "an experiment moved @champion"
    challenger = client.get_model_version_by_alias("catdog", "challenger")
    assert int(challenger.version) > int(champion)
    shown = sh(*dvc, "exp", "show", "--csv", cwd=root, env=env)
    header, *rows = shown.splitlines()
    assert all(f"{v}.test_accuracy" in header.split(",") for v in VARIANTS)
    assert any("three-epochs" in row for row in rows)
    tagged = client.search_runs([experiment_id], "tags.dvc_experiment = 'three-epochs'")
    assert sorted(r.info.run_name for r in tagged) == ["baseline-42", "compare"]

    sh("git", "checkout", "--", ".", cwd=root, env=env)  # back to the commit, as a teammate's clone would be
    sh(*dvc, "checkout", "--force", cwd=root, env=env)
    assert yaml.safe_load((root / "params.yaml").read_text())["variants"]["baseline"]["trainer"]["epochs"] == committed
    sh(*dvc, "exp", "apply", "three-epochs", cwd=root, env=env)
    composed = sh(
        sys.executable,
        "-c",
        "from pathlib import Path; from catdog.study import compose_config; "
        "print(compose_config(Path('conf'), ['variant=baseline']).trainer.epochs)",
        cwd=root,
        env={**env, "PYTHONPATH": str(root / "src")},
    )
    assert composed.strip() == "3"
    assert dvc_status(root, env) == set()


def dvc_status(root: Path, env: dict[str, str]) -> set[str]:
    """The stages `dvc status` says are out of date."""
    return set(json.loads(sh(sys.executable, "-m", "dvc", "status", "--json", cwd=root, env=env)))


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
    variant_file = root / "conf/variant/augmented.yaml"
    original = variant_file.read_text()
    try:
        variant_file.write_text(original + "# a comment\n")
        assert dvc_status(root, env) == {"train@augmented-42"}
    finally:
        variant_file.write_text(original)
    assert dvc_status(root, env) == set()


def test_queued_experiments_run_two_at_once_each_in_its_own_runs(project) -> None:
    """`dvc exp run --queue` of a train stage twice, then `dvc queue start --jobs 2`: both train at the same time,
    each tracked in MLflow under its experiment's name, each TensorFlow on the threads CATDOG_THREADS gives it."""
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


@pytest.mark.requires("swift")
def test_a_clone_pulls_the_study_from_an_s3_remote_and_has_nothing_to_rerun(project, tmp_path: Path) -> None:
    """`dvc push` to a DVC S3 remote on Swift's S3 API, a fresh `git clone`, `dvc pull`: every stage is up to date
    and `dvc repro` neither downloads (the clone has no mirror and no network) nor trains (no MLflow run)."""
    root, env = project
    s3 = swift.S3Server(tmp_path / "s3")
    s3.start()
    try:
        s3.create_bucket("dvc")
        dvc = (sys.executable, "-m", "dvc")

        def add_remote(clone: Path) -> None:  # per user, in .dvc/config.local: nothing of it is committed
            sh(*dvc, "remote", "add", "--local", "-d", "team", "s3://dvc/catdog", cwd=clone, env=env)
            # The keys stay in the server's 0600 credentials file: none is on a command line or in a config.
            for key, value in (("endpointurl", s3.endpoint), ("credentialpath", str(s3.credentials_file))):
                sh(*dvc, "remote", "modify", "--local", "team", key, value, cwd=clone, env=env)

        assert dvc_status(root, env) == set()
        sh("git", "add", "-A", cwd=root, env=env)
        sh("git", "commit", "-qm", "the study", "--allow-empty", cwd=root, env=env)
        add_remote(root)
        pushed = sh(*dvc, "push", cwd=root, env=env)
        assert "files pushed" in pushed, pushed
        assert s3.secret_key not in sh("git", "show", "HEAD:.dvc/config", cwd=root, env=env)
        clone = tmp_path / "teammate"
        sh("git", "clone", "-q", str(root), str(clone), cwd=tmp_path, env=env)
        assert not (clone / "models" / "baseline-42").exists()
        add_remote(clone)
        sh(*dvc, "pull", cwd=clone, env=env)
        for variant in VARIANTS:
            assert (clone / "models" / f"{variant}-42" / "model.keras").read_bytes() == (
                root / "models" / f"{variant}-42" / "model.keras"
            ).read_bytes()
        offline = {**env, "CATDOG_DATA_MIRROR": str(tmp_path / "no-such-mirror.zip")}
        assert dvc_status(clone, offline) == set()
        out = sh(*dvc, "repro", cwd=clone, env=offline)
        assert "Data and pipelines are up to date." in out, out
        assert "Running stage" not in out, out
        assert not (clone / "mlflow.db").exists() and not (clone / "mlruns").exists()
    finally:
        s3.stop()


def test_more_seeds_train_only_the_new_runs_and_compare_reports_over_seeds(project) -> None:
    """`dvc exp run -S 'study.seeds=[42,7]'`: only the seed-7 stages train (seed 42's are up to date), and the
    leaderboard, metrics and report show each variant over both seeds, its runs in MLflow tagged with their seed."""
    root, env = project
    dvc = (sys.executable, "-m", "dvc")
    assert dvc_status(root, env) == set()
    out = sh(
        *dvc,
        "exp",
        "run",
        "-n",
        "two-seeds",
        "-S",
        "study.variants=[baseline]",
        "-S",
        "study.seeds=[42,7]",
        cwd=root,
        env=env,
    )
    assert set(re.findall(r"Running stage '([^']+)'", out)) == {"train@baseline-7", "compare", "report"}
    board = (root / "reports/leaderboard.md").read_text()
    assert "| sd | seed 42 | seed 7 |" in board and "trained with 2 seeds (42, 7)" in board
    metrics = json.loads((root / "metrics/compare.json").read_text())
    assert set(metrics) == {"baseline", "majority-class"}
    for variant in ("baseline",):
        per_seed = [json.loads((root / "metrics/train" / f"{variant}-{s}.json").read_text()) for s in (42, 7)]
        details = json.loads((root / "reports/compare.json").read_text())
        assert details["validation"][variant]["best_val_accuracy"] == pytest.approx(
            sum(m["best_val_accuracy"] for m in per_seed) / 2
        )
        assert {metrics[variant]["test_accuracy_seed_42"], metrics[variant]["test_accuracy_seed_7"]} == {
            details["runs"][f"{variant}-{s}"]["test_accuracy"] for s in (42, 7)
        }
    page = (root / "reports/study.html").read_text(encoding="utf-8")
    assert "seed 7" in page and "train@baseline-7" in page
    client, experiment_id = study_store(root)
    tagged = client.search_runs([experiment_id], "tags.dvc_experiment = 'two-seeds'")
    assert sorted(r.info.run_name for r in tagged) == ["baseline-7", "compare"]
    assert {r.data.tags["seed"] for r in tagged if r.info.run_name != "compare"} == {"7"}
