"""Prediction: the classifier pyfunc, `src/predict.py` and `mlflow models serve` give the training pipeline's answers
for every image format; bad images get their own error rows; a missing model fails at once in one line."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import sys
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, TINY_SIZE, run_entry, tiny_config
from omegaconf import OmegaConf
from PIL import Image

from catdog.data.dataset import decode_images
from catdog.predict import label_files as predict
from catdog.predict.loading import load_predictor
from catdog.serve.classifier import ImageClassifier, log_classifier, softmax, to_base64
from catdog.train.models import build_model

sys.path.insert(0, str(REPO / "bench"))
from served import ServedModel  # noqa: E402  (the served model, as the benchmarks serve it)

CLASSES = ["cats", "dogs"]
TOLERANCE = 1e-6


def picture(seed: int, size: tuple[int, int]) -> np.ndarray:
    """A smooth colour gradient plus noise, (height, width, 3) uint8, different for each seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    ramp = np.linspace(0, 1, w)[None, :, None] * rng.uniform(0, 255, 3) + np.linspace(0, 1, h)[:, None, None] * 60
    return np.clip(ramp + rng.normal(0, 20, (h, w, 3)), 0, 255).astype("uint8")


def save(path: Path, pixels: np.ndarray, fmt: str, mode: str = "RGB", **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path, format=fmt, **options)
    return path


def animated_gif(path: Path, seed: int) -> Path:
    frames = [Image.fromarray(picture(seed, (36, 28))), Image.fromarray(picture(seed + 1, (36, 28)))]
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:])
    return path


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The study's `scaled` model (augmentation, scaling, the CNN) at the tiny size, untrained but seeded."""
    keras.utils.set_random_seed(7)
    path = tmp_path_factory.mktemp("model") / "model.keras"
    build_model(tiny_config("scaled"), len(CLASSES)).save(path)
    return path


@pytest.fixture(scope="module")
def model(keras_file: Path) -> keras.Model:
    return keras.models.load_model(keras_file, compile=False)


def expected(model: keras.Model, files: list[Path]) -> list[tuple[str, float]]:
    """Label and probability from the training pipeline's own decode of the files."""
    images = decode_images([str(f) for f in files], TINY_SIZE, desc="expected").astype("float32")
    probs = softmax(np.asarray(model.predict(images, verbose=0), dtype=np.float64))
    return [(CLASSES[int(p.argmax())], float(p.max())) for p in probs]


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, list[str], list[str]]:
    """predict.py in-process: exit code, stdout lines, stderr lines (a refused command exits)."""
    try:
        code = predict.main(argv)
    except SystemExit as refused:
        code = refused.code
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def test_every_format_and_size_gets_the_training_pipelines_answer(
    tmp_path: Path, keras_file: Path, model: keras.Model, capsys: pytest.CaptureFixture
) -> None:
    photos = tmp_path / "photos"
    rgb = picture(1, (30, 60))
    grey = picture(2, (45, 45)).mean(axis=2).astype("uint8")
    files = [
        save(photos / "a.jpg", picture(0, (40, 30)), "JPEG", quality=90),
        save(photos / "b.png", picture(3, (64, 48)), "PNG"),
        save(photos / "c.bmp", picture(4, (33, 77)), "BMP"),
        animated_gif(photos / "d.gif", 5),
        save(photos / "e-grey.jpg", grey, "JPEG"),
        save(photos / "f-grey.png", grey, "PNG"),
        save(photos / "g-rgb.png", np.repeat(grey[:, :, None], 3, axis=2), "PNG"),
        save(photos / "h-rgba.png", rgb, "PNG", mode="RGBA"),
        save(photos / "i-rgb.png", rgb, "PNG"),
        save(photos / "nested" / "j.JPEG", picture(6, (500, 375)), "JPEG"),
        save(photos / "k-tiny.png", picture(7, (5, 3)), "PNG"),
    ]
    (photos / "notes.txt").write_text("not an image, and not picked from a folder")
    code, out, _ = run([str(photos), f"model={keras_file}", f"out={tmp_path / 'preds.json'}"], capsys)
    assert code == 0
    rows = json.loads((tmp_path / "preds.json").read_text())
    assert [r["path"] for r in rows] == sorted(str(f) for f in files)
    got = {Path(r["path"]).name: r for r in rows}
    for path, (label, probability) in zip(files, expected(model, files), strict=True):
        row = got[path.name]
        assert row["error"] == "" and row["label"] == label
        assert row["probability"] == pytest.approx(probability, abs=TOLERANCE)
    assert len({round(r["probability"], 6) for r in rows}) > 3, "an untrained model should not be this sure"
    # Greyscale becomes RGB by repeating the channel, and RGBA drops its alpha.
    assert got["f-grey.png"]["probability"] == got["g-rgb.png"]["probability"]
    assert got["h-rgba.png"]["probability"] == got["i-rgb.png"]["probability"]
    assert out == [f"{r['path']}\t{r['label']}\t{r['probability']:.4f}" for r in rows]


def test_a_bad_image_gets_an_error_row_and_the_others_go_on(
    tmp_path: Path, keras_file: Path, model: keras.Model, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "mixed"
    good = save(folder / "a-good.jpg", picture(0, (40, 30)), "JPEG")
    whole = save(tmp_path / "whole.jpg", picture(1, (80, 60)), "JPEG").read_bytes()
    (folder / "b-truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "c-text.png").write_text("this is not a PNG")
    (folder / "d-empty.bmp").write_bytes(b"")
    later = save(folder / "e-good.png", picture(2, (20, 50)), "PNG")
    readme = tmp_path / "README.md"
    readme.write_text("named on the command line, so read, and refused")
    out_csv = tmp_path / "preds.csv"
    code, out, err = run([str(folder), str(readme), f"model={keras_file}", f"out={out_csv}", "batch_size=2"], capsys)
    assert code == 1
    assert err[-1] == "predict: 4 of 6 images could not be read"
    with open(out_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = ["a-good.jpg", "b-truncated.jpg", "c-text.png", "d-empty.bmp", "e-good.png", "README.md"]
    assert [Path(r["path"]).name for r in rows] == names
    by_name = {Path(r["path"]).name: r for r in rows}
    for name, why in [
        ("b-truncated.jpg", "jpeg"),
        ("c-text.png", "unknown image file format"),
        ("d-empty.bmp", "empty"),
        ("README.md", "unknown image file format"),
    ]:
        row = by_name[name]
        assert why in row["error"].lower() and row["label"] == "" and row["probability"] == ""
        assert f"{row['path']}\terror: {row['error']}" in out
    for path, (label, probability) in zip([good, later], expected(model, [good, later]), strict=True):
        row = by_name[path.name]
        assert row["error"] == "" and row["label"] == label
        assert float(row["probability"]) == pytest.approx(probability, abs=TOLERANCE)


def test_csv_and_json_hold_the_printed_table(tmp_path: Path, keras_file: Path, capsys: pytest.CaptureFixture) -> None:
    files = [save(tmp_path / f"{i}.png", picture(i, (30 + i, 40)), "PNG") for i in range(3)]
    args = [*map(str, files), f"model={keras_file}"]
    _, printed, _ = run([*args, f"out={tmp_path / 'p.csv'}"], capsys)
    run([*args, f"out={tmp_path / 'p.json'}"], capsys)
    with open(tmp_path / "p.csv", newline="") as handle:
        from_csv = [(r["path"], r["label"], float(r["probability"]), r["error"]) for r in csv.DictReader(handle)]
    table = json.loads((tmp_path / "p.json").read_text())
    from_json = [(r["path"], r["label"], r["probability"], r["error"]) for r in table]
    assert from_csv == from_json
    assert printed == [f"{p}\t{label}\t{prob:.4f}" for p, label, prob, _ in from_json]


@pytest.fixture
def fail_if_images_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("images were read before the model was found")

    monkeypatch.setattr(predict, "predict_files", refuse)


@pytest.mark.parametrize(
    "model_arg,names",
    [
        (None, "models:/catdog@champion"),
        ("model=models:/catdog/7", "models:/catdog/7"),
        ("model=models:/m-0123456789abcdef0123456789abcdef", "models:/m-0123456789abcdef"),
        ("model=runs:/0123456789abcdef0123456789abcdef/classifier", "runs:/0123456789abcdef"),
        ("model=missing/model.keras", "missing/model.keras"),
    ],
)
def test_an_unknown_model_fails_at_once_in_one_line(
    tmp_path: Path,
    model_arg: str | None,
    names: str,
    fail_if_images_are_read: None,
    bare_project: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    mlflow.MlflowClient().search_experiments()  # the store exists, and holds no model
    image = save(tmp_path / "a.jpg", picture(0, (40, 30)), "JPEG")
    capsys.readouterr()
    code, out, err = run([str(image), *([model_arg] if model_arg else [])], capsys)
    assert code == 2 and out == []
    assert len(err) == 1 and names in err[0] and "dvc repro" in err[0]
    # Without model=, nor registry nor the study has one (catdog.predict.loading.study_champion; test_study_files).
    assert ("python src/train.py" in err[0]) == (model_arg is not None) and ("dvc pull" in err[0]) == (
        model_arg is None
    )


def test_the_entry_point_reports_an_empty_registry_in_one_line_and_no_tensorflow(tmp_path: Path, bare_project) -> None:
    image = save(tmp_path / "a.jpg", picture(0, (40, 30)), "JPEG")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'none.db'}"}
    done = run_entry("predict.py", str(image), cwd=tmp_path, env=env)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [done.stderr.strip()], done.stderr
    assert (
        "models:/catdog@champion is not in the tracking store" in done.stderr
        and "compare.json is not there" in done.stderr
    )
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize(
    "argv,problem",
    [
        (["a.jpg", "--fast"], "unknown option '--fast'"),
        (["a.jpg", "batch_size=0"], "batch_size=0: expected an integer >= 1"),
        (["a.jpg", "out=preds.txt"], "out=preds.txt: expected a file ending in .csv or .json"),
        ([], "no image files or folders given"),
        (["nowhere/"], "nowhere: no such file or folder"),
        (["empty"], "no images"),
    ],
)
def test_a_usage_error_names_the_problem(
    workdir: Path, argv: list[str], problem: str, fail_if_images_are_read: None, capsys: pytest.CaptureFixture
) -> None:
    save(workdir / "a.jpg", picture(0, (40, 30)), "JPEG")
    (workdir / "empty").mkdir()
    code, out, err = run(argv, capsys)
    assert code == 2 and out == []
    assert len(err) == 1 and err[0].startswith("predict: ") and problem in err[0]
    assert err[0].endswith(predict.USAGE)


def photos(folder: Path) -> list[Path]:
    return [
        save(folder / "a.jpg", picture(0, (40, 30)), "JPEG"),
        save(folder / "b.png", picture(1, (25, 70)), "PNG"),
        save(folder / "c.gif", picture(2, (50, 50)), "GIF"),
    ]


def make_champion(model_uri: str) -> None:
    """Register `model_uri` as a new version of `catdog` and point `@champion` at it."""
    version = mlflow.register_model(model_uri, "catdog")
    mlflow.MlflowClient().set_registered_model_alias("catdog", "champion", version.version)


@pytest.fixture
def local_rows(tmp_path: Path, keras_file: Path, capsys: pytest.CaptureFixture) -> tuple[list[Path], tuple]:
    """Three photos, and what predict.py prints for them with the local .keras file."""
    files = photos(tmp_path / "photos")
    return files, run([*map(str, files), f"model={keras_file}"], capsys)


def test_a_logged_classifier_gives_the_local_models_rows(
    local_rows: tuple, model: keras.Model, capsys: pytest.CaptureFixture
) -> None:
    files, local = local_rows
    with mlflow.start_run() as active:
        info = log_classifier(model, CLASSES)
    assert info.model_uri.startswith("models:/m-")
    make_champion(info.model_uri)
    for uri in [info.model_uri, f"runs:/{active.info.run_id}/classifier", "models:/catdog/1", None]:
        assert run([*map(str, files), *([f"model={uri}"] if uri else [])], capsys)[:2] == local[:2], uri
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    assert loaded.metadata.get_model_info().flavors["python_function"]["config"] == {
        "classes": CLASSES,
        "image_size": TINY_SIZE,
        "max_pixels": 40_000_000,
    }


@pytest.mark.parametrize("from_file", [True, False], ids=["from its file", "from memory"])
def test_a_classifier_is_logged_without_loading_it_back_and_answers_its_serving_example(
    from_file: bool, keras_file: Path, model: keras.Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Logging serializes the model at most once (never, given its file) and loads nothing back (MLflow's own
    check of the serving example would load the Keras model and predict); the example it logs still serves."""
    calls: list[str] = []
    load, save_model = keras.models.load_model, keras.Model.save
    monkeypatch.setattr(keras.models, "load_model", lambda *a, **k: calls.append("load") or load(*a, **k))
    monkeypatch.setattr(keras.Model, "save", lambda *a, **k: calls.append("save") or save_model(*a, **k))
    with mlflow.start_run():
        info = log_classifier(model, CLASSES, saved=keras_file if from_file else None)
    assert calls == ([] if from_file else ["save"])
    logged = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    if from_file:
        assert (logged / "artifacts" / keras_file.name).read_bytes() == keras_file.read_bytes()
    example = json.loads(mlflow.models.Model.load(logged).get_serving_input(str(logged)))["dataframe_split"]
    answer = mlflow.pyfunc.load_model(info.model_uri).predict(pd.DataFrame(example["data"], columns=example["columns"]))
    assert answer["label"].tolist()[0] in CLASSES and answer["error"].tolist() == [""]


def test_predict_applies_the_configured_pixel_limit_to_every_kind_of_model(
    tmp_path: Path, keras_file: Path, model: keras.Model
) -> None:
    image = save(tmp_path / "a.png", picture(0, (40, 30)), "PNG")  # 1,200 pixels
    with mlflow.start_run() as active:
        logged = log_classifier(model, CLASSES).model_uri  # logged with the default, 40 MP
        mlflow.keras.save_model(model, str(tmp_path / "keras-model"))
        mlflow.log_artifacts(str(tmp_path / "keras-model"), "model")
    cfg = predict.project_config()
    strict = OmegaConf.merge(cfg, {"data": {"max_pixels": 1000}})
    for spec in [str(keras_file), logged, f"runs:/{active.info.run_id}/model"]:
        assert predict.predict_files([image], load_predictor(spec, cfg), 1)[0]["error"] == "", spec
        row = predict.predict_files([image], load_predictor(spec, strict), 1)[0]
        assert "over the limit of 0.001 megapixels (max_pixels=1000)" in row["error"], spec


def test_a_keras_flavour_champion_is_wrapped_with_the_configured_classes(
    tmp_path: Path, local_rows: tuple, model: keras.Model, capsys: pytest.CaptureFixture
) -> None:
    """What the compare stage registered before the pyfunc existed: a plain Keras model taking float pixels."""
    files, local = local_rows
    with mlflow.start_run() as active:
        mlflow.keras.save_model(model, str(tmp_path / "keras-model"))
        mlflow.log_artifacts(str(tmp_path / "keras-model"), "model")
    make_champion(f"runs:/{active.info.run_id}/model")
    assert run(list(map(str, files)), capsys)[:2] == local[:2]


@pytest.mark.slow
def test_the_entry_point_predicts_a_folder_and_exits_1_on_a_bad_file(tmp_path: Path, keras_file: Path) -> None:
    folder = tmp_path / "photos"
    files = photos(folder)
    (folder / "z-broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    done = run_entry("predict.py", str(folder), f"model={keras_file}", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(f) for f in files] + [str(folder / "z-broken.jpg")]
    assert all(line.split("\t")[1] in CLASSES for line in lines[:3])
    assert lines[3].startswith(f"{folder / 'z-broken.jpg'}\terror: ")
    assert "predict:" in done.stderr and "img" in done.stderr  # the summary, and the folder's progress bar


def test_a_logged_classifier_refuses_a_model_whose_outputs_are_not_the_classes(model: keras.Model) -> None:
    with pytest.raises(ValueError, match=r"has 2 outputs but 3 classes"):
        ImageClassifier.wrap(model, ["cats", "dogs", "birds"])


def test_the_prediction_benchmark_times_every_mode_on_the_test_split(split_data: Path, keras_file: Path) -> None:
    bench = load_bench()
    out = split_data / "results"
    result = bench.main(["--model", str(keras_file), "--images", "5", "--batch-size", "2", "--repeats", "1",
                         "--out", str(out)])  # fmt: skip
    assert [(r["mode"], r["batch"], r["images"]) for r in result["rows"]] == [
        ("all at once", 5, 5),
        ("batches of 2", 2, 5),
        ("one by one", 1, 5),
    ]
    assert all(r["images_per_s"] > 0 for r in result["rows"])
    assert json.loads((out / "predict.json").read_text()) == result
    assert (out / "predict.md").read_text().count("\n| ") == 4


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_predict", REPO / "bench" / "predict.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.slow
def test_the_prediction_benchmark_adds_the_bound_and_the_served_path(split_data: Path, model: keras.Model) -> None:
    with mlflow.start_run():
        info = log_classifier(model, CLASSES)
    result = load_bench().main(["--model", info.model_uri, "--images", "3", "--batch-size", "2", "--repeats", "1",
                                "--out", str(split_data / "results")])  # fmt: skip
    assert result["served"] is True
    for row in result["rows"]:
        assert row["model_only_images_per_s"] > 0 and row["end_to_end_over_bound"] > 0
        assert row["served_images_per_s"] > 0 and "served_overhead_ms_per_request" in row
    assert "| served images/s |" in (split_data / "results" / "predict.md").read_text()


@pytest.mark.slow
def test_mlflow_models_serve_answers_as_predict_does(
    tmp_path: Path, model: keras.Model, isolated_mlflow: str, capsys: pytest.CaptureFixture
) -> None:
    files = photos(tmp_path / "photos")[:2]
    with mlflow.start_run():
        info = log_classifier(model, CLASSES)
    _, printed, _ = run([*map(str, files), f"model={info.model_uri}", f"out={tmp_path / 'p.json'}"], capsys)
    wanted = json.loads((tmp_path / "p.json").read_text())
    with ServedModel(info.model_uri, tmp_path / "serve.log", {"MLFLOW_TRACKING_URI": isolated_mlflow}) as server:
        images = [[to_base64(f.read_bytes())] for f in files]
        body = json.dumps({"dataframe_split": {"columns": ["image"], "data": images}})
        status, answer = server.post(body.encode())
        assert status == 200, answer
        served = json.loads(answer)["predictions"]
        exchange = {"request": json.loads(body), "response": json.loads(answer)}
        assert [r["label"] for r in served] == [r["label"] for r in wanted]
        assert [r["error"] for r in served] == ["", ""]
        for got, want in zip(served, wanted, strict=True):
            assert got["probability"] == pytest.approx(want["probability"], abs=TOLERANCE)

        status, answer = server.post(b'{"dataframe_split": {"columns": ["image"], "data": [[')
        exchange["bad_json"] = (status, answer)
        assert 400 <= status < 500 and "json" in answer.lower(), answer
        missing = {"dataframe_split": {"columns": ["picture"], "data": [[to_base64(files[0].read_bytes())]]}}
        status, answer = server.post(json.dumps(missing).encode())
        exchange["missing_column"] = (status, answer)
        assert 400 <= status < 500 and "image" in answer, answer
        bad_row = {"dataframe_split": {"columns": ["image"], "data": [["not base64!"], images[0]]}}
        status, answer = server.post(json.dumps(bad_row).encode())
        assert status == 200, answer
        exchange["bad_row"] = (status, answer)
        (tmp_path / "exchange.json").write_text(json.dumps(exchange, indent=1))  # a real exchange, to read
        first, second = json.loads(answer)["predictions"]
        assert "base64" in first["error"] and first["label"] == "" and second["label"] == wanted[0]["label"]

        status, answer = server.post(body.encode())
        assert status == 200 and json.loads(answer)["predictions"] == served
