"""The tiny study pushed to a DVC S3 remote (Swift's S3 API) and pulled into a fresh clone, which has its own, empty
MLflow store: nothing reruns, and what a teammate does next works from the study's files alone."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import without_tensorflow
from mlflow import MlflowClient
from tiny_study import VARIANTS, TinyStudy, dvc_status, sh

from catdog.team import swift

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("clone")]


@pytest.mark.requires("swift")
def test_a_clone_pulls_the_study_from_an_s3_remote_and_has_nothing_to_rerun(
    built_study: TinyStudy, tmp_path: Path
) -> None:
    """`dvc push` to a DVC S3 remote on Swift's S3 API, a fresh `git clone`, `dvc pull`: every stage is up to date
    and `dvc repro` neither downloads (the clone has no mirror and no network) nor trains (no MLflow run)."""
    root, env = built_study.pristine, built_study.env
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
        a_study_is_its_files(root, clone, offline)
    finally:
        s3.stop()


def section(page: str, anchor: str) -> str:
    return re.search(rf'<section id="{anchor}">(.*?)</section>', page, re.S).group(1)


def earlier_stage_rows(page: str) -> list[str]:
    """The provenance table's rows of the train and compare stages (the report's own row is the page's run)."""
    rows = re.findall(r"<tr>(.*?)</tr>", section(page, "provenance"), re.S)
    return [r for r in rows if "train@" in r or "<td>compare</td>" in r]


def a_study_is_its_files(root: Path, clone: Path, env: dict[str, str]) -> None:
    """The pulled study in a clone whose MLflow store is new and empty: predict labels with the study's champion
    from the files; a touched report module reruns the report alone, which builds the original's page without
    the original's store; a touched compare module reruns compare and report, and the champion is registered in
    the clone's store from its model file; publish logs the training runs into the store once."""
    dvc = (sys.executable, "-m", "dvc")
    image = next((clone / "data/raw/cats_and_dogs_filtered/validation/cats").glob("*.jpg"))
    done = subprocess.run(
        [sys.executable, "src/predict.py", str(image)], cwd=clone, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(rf"{re.escape(str(image))}\t(cats|dogs)\t[01]\.\d{{4}}\n", done.stdout), done.stdout
    assert "is not in the tracking store" in done.stderr and "using the study's champion" in done.stderr

    with open(clone / "src/catdog/report/html.py", "a") as handle:
        handle.write("# touched\n")
    assert dvc_status(clone, env) == {"report"}
    out = sh(*dvc, "repro", cwd=clone, env=env)
    assert set(re.findall(r"Running stage '([^']+)'", out)) == {"report"}, out
    assert "not logged: the compare run" in out
    ours, theirs = ((p / "reports/study.html").read_text(encoding="utf-8") for p in (clone, root))
    assert section(ours, "variants") == section(theirs, "variants")
    assert earlier_stage_rows(ours) == earlier_stage_rows(theirs) and len(earlier_stage_rows(ours)) == len(VARIANTS) + 1

    with open(clone / "src/catdog/compare/figures.py", "a") as handle:
        handle.write("# touched\n")
    out = sh(*dvc, "repro", cwd=clone, env=env)
    assert set(re.findall(r"Running stage '([^']+)'", out)) == {"compare", "report"}, out
    client = MlflowClient(f"sqlite:///{clone / 'mlflow.db'}")
    details = json.loads((clone / "reports/compare.json").read_text())
    version = client.get_model_version_by_alias("catdog", details["champion_alias"])
    trained = json.loads((clone / "records/train" / f"{details['champion']}-42.json").read_text())["mlflow"]
    assert version.tags["training_run_id"] == trained["run_id"] and version.tags["logged_by"].startswith("compare")
    assert version.run_id == details["provenance"]["mlflow"]["run_id"]
    assert "logged to the compare run" in out

    # The second call must not need TensorFlow: there is nothing to log.
    no_tensorflow = without_tensorflow(env, clone.parent, "publish imported TensorFlow with nothing to publish")
    published = [sh(sys.executable, "src/publish.py", cwd=clone, env=e) for e in (env, no_tensorflow)]
    assert all(f"{v}-42" in published[0].split("already there")[0] for v in VARIANTS), published[0]
    assert "published into" in published[1] and ": nothing; already there" in published[1], published[1]
    experiment = client.get_experiment_by_name("catdog-study")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(["compare", *(f"{v}-42" for v in VARIANTS)])
    for run in runs:
        if run.info.run_name != "compare":
            history = client.get_metric_history(run.info.run_id, "val_accuracy")
            assert len(history) == 1 and run.data.tags["published_from"] != run.info.run_id
