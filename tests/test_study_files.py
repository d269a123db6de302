"""A study is its files: each run's record holds what its MLflow run holds, and predict finds the study's champion
from the files where the tracking store has no registered champion (a pulled study in another clone)."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from PIL import Image

from catdog.common.files import StudyFileMissing
from catdog.predict import label_files as predict
from catdog.tracking.records import commit_of, read_record, write_record


def test_a_record_holds_what_the_run_holds_and_reads_back(tmp_path: Path) -> None:
    with mlflow.start_run(run_name="baseline-42") as run:
        mlflow.log_params({"trainer.epochs": 3, "model.name": "cnn"})
        mlflow.set_tags({"git_commit": "0123456789abcdef", "git_dirty": "false", "variant": "baseline"})
        written = write_record(tmp_path / "baseline-42.json", run.info.run_id, {"classifier_uri": "models:/m-1"})
    assert read_record(tmp_path / "baseline-42.json", "train@baseline-42") == written
    held = mlflow.get_run(run.info.run_id)
    assert written["params"] == held.data.params == {"trainer.epochs": "3", "model.name": "cnn"}
    assert written["tags"] == {"git_commit": "0123456789abcdef", "git_dirty": "false", "variant": "baseline"}
    assert written["mlflow"] == {
        "experiment_id": held.info.experiment_id,
        "run_id": run.info.run_id,
        "classifier_uri": "models:/m-1",
    }
    assert written["run"] == "baseline-42" and written["started"].endswith(" UTC") and written["seconds"] >= 0
    assert commit_of(written["tags"]) == "0123456"


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "not found; run `dvc repro train@x-1`"), ("{", "is not JSON"), ('{"a": 1}', "is not a run record")],
)
def test_a_missing_or_broken_record_names_the_file_and_the_stage(tmp_path: Path, content: str | None, problem: str):
    path = tmp_path / "x-1.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(StudyFileMissing, match=problem) as caught:
        read_record(path, "train@x-1")
    assert str(path) in caught.value.line() and "\n" not in caught.value.line()


def tiny_classifier() -> keras.Model:
    inputs = keras.Input((32, 32, 3))
    logits = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inputs))
    return keras.Model(inputs, logits)


def image(tmp_path: Path) -> Path:
    path = tmp_path / "a.png"
    Image.fromarray(np.full((40, 30, 3), 120, np.uint8)).save(path)
    return path


def test_predict_without_a_registered_champion_uses_the_study_s_champion_from_its_files(
    bare_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (bare_project / "reports").mkdir()
    details = {"champion": "scaled", "validation": {"scaled": {"seed": 7}}}
    (bare_project / "reports" / "compare.json").write_text(json.dumps(details))
    model = bare_project / "models" / "scaled-7" / "model.keras"
    model.parent.mkdir(parents=True)
    tiny_classifier().save(model)
    picture = image(tmp_path)
    assert predict.main([str(picture)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{picture}\t") and out.count("\n") == 1
    (line,) = err.strip().splitlines()
    assert "models:/catdog@champion is not in the tracking store" in line
    assert f"using the study's champion scaled (seed 7), {model}" in line


def test_without_a_registered_champion_or_a_study_predict_says_what_is_missing(
    bare_project: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    picture = image(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        predict.main([str(picture)])
    assert stopped.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "models:/catdog@champion is not in the tracking store" in line
    assert f"{bare_project / 'reports' / 'compare.json'} is not there" in line and "`dvc pull`" in line
    (bare_project / "reports").mkdir()
    (bare_project / "reports" / "compare.json").write_text(
        json.dumps({"champion": "baseline", "validation": {"baseline": {"seed": 42}}})
    )
    with pytest.raises(SystemExit):
        predict.main([str(picture)])
    line = capsys.readouterr().err.strip()
    assert (
        "the study's champion baseline (seed 42) has no model file" in line and "models/baseline-42/model.keras" in line
    )
