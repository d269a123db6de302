"""The study report: its numbers come from what the study wrote, its page needs nothing outside itself, and a
browser opens it without an error (tests/test_pipeline.py checks the report of a whole study run by DVC)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import TINY_SIZE, tiny_config
from headless import check_page, external_references, find_browser
from PIL import Image

from catdog.common.files import StudyFileMissing
from catdog.common.machine import fingerprint
from catdog.compare.predictions import Answers, read_predictions, write_predictions
from catdog.data.manifests import read_manifest
from catdog.report.build import compare_provenance
from catdog.report.explanations import explain, pick
from catdog.report.html import Html, Section, image, inline_markdown, page, table
from catdog.report.runs import config_differences, stage_times
from catdog.report.sections import summary
from catdog.tracking.records import write_record

CLASSES = ["cats", "dogs"]


def details(champion: str = "transfer", accuracies: dict[str, float] | None = None) -> dict:
    """A reports/compare.json of 500 test images: accuracies per model, the champion chosen on val."""
    accuracies = accuracies or {"transfer": 0.988, "scaled": 0.764, "majority-class": 0.5}
    models = {}
    for name, accuracy in accuracies.items():
        right = round(accuracy * 500)
        models[name] = {
            "accuracy": accuracy,
            "ci_low": accuracy - 0.014,
            "ci_high": accuracy + 0.006,
            "loss": 0.1,
            "confusion_matrix": [[right // 2, 250 - right // 2], [250 - (right - right // 2), right - right // 2]],
            "per_class": {},
        }
    pairwise = [{"a": "scaled", "b": "transfer", "p_holm": 4.43e-32, "significant": True}]
    return {
        "champion": champion,
        "n_test": 500,
        "models": models,
        "pairwise": pairwise,
        "validation": {champion: {"best_val_accuracy": 0.986}},
    }


def test_the_summary_line_is_built_from_the_numbers() -> None:
    assert summary(details()) == (
        "transfer wins: 98.8% [97.4–99.4] on 500 test images (6 wrong); next: scaled 76.4% [75.0–77.0], a "
        "significant difference (McNemar, Holm p = 4.4e-32); chosen on validation (98.6%), never on test."
    )


def test_the_summary_says_when_the_validation_pick_is_not_the_test_leader() -> None:
    line = summary(details("scaled", {"transfer": 0.988, "scaled": 0.764}))
    assert line.startswith(
        "scaled is the validation pick: 76.4% [75.0–77.0] on 500 test images (118 wrong); test leader: transfer 98.8%"
    )


def test_the_summary_says_when_the_champion_ties_for_first() -> None:
    line = summary(details("transfer", {"transfer": 0.988, "scaled": 0.988}))
    assert line.startswith("transfer ties for first: 98.8% [97.4–99.4] on 500 test images (6 wrong); tied with: scaled")


def test_config_differences_keep_what_differs_from_the_baseline_and_drop_run_names() -> None:
    params = {
        "baseline": {"name": "baseline", "trainer.epochs": "20", "trainer.checkpoint_dir": "a", "seed": "42"},
        "augmented": {"name": "augmented", "trainer.epochs": "20", "trainer.checkpoint_dir": "b", "augment.flip": "h"},
        "transfer": {"name": "transfer", "trainer.epochs": "10", "trainer.checkpoint_dir": "c"},
    }
    assert config_differences(params, "baseline") == [
        ("augment.flip", ["–", "h", "–"]),
        ("trainer.epochs", ["20", "20", "10"]),
    ]


def test_pick_takes_the_first_mistakes_up_to_the_cap_and_right_answers_per_class() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    predicted = np.array([1, 0, 1, 0, 1, 0, 1, 1])
    wrong, right = pick(labels, predicted, cap=1, per_class=2, n_classes=2)
    assert wrong.tolist() == [0] and right.tolist() == [1, 3, 4, 6]


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), colour, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def small_page(*parts: object) -> str:
    body = [
        image(png((200, 30, 30)), "image/png", "red"),
        table(["a <b>", "c"], [["<script>x</script>", Html("<em>ok</em>")]]),
    ]
    return page("t <title>", "one <line>", [Section("s", "S & T", [*body, *parts])])


def test_the_page_escapes_text_and_refers_to_nothing_outside_itself() -> None:
    text = small_page()
    assert "<script>" not in text and "&lt;script&gt;x&lt;/script&gt;" in text and "<em>ok</em>" in text
    assert "<h1>t &lt;title&gt;</h1>" in text and "<h2>S &amp; T</h2>" in text
    assert external_references(text) == []
    assert external_references('<img src="http://x/y.png"><link rel=stylesheet href=a.css>') != []
    assert inline_markdown("Champion: **a<b**, `x`") == "Champion: <strong>a&lt;b</strong>, <code>x</code>"


@pytest.fixture(scope="module")
def browser() -> str:
    return find_browser()


@pytest.mark.slow
@pytest.mark.requires("chromium")
def test_a_browser_opens_a_clean_page_without_a_problem(tmp_path: Path, browser: str) -> None:
    (tmp_path / "page.html").write_text(small_page(), encoding="utf-8")
    assert check_page(tmp_path / "page.html", browser) == []


@pytest.mark.slow
@pytest.mark.requires("chromium")
def test_a_broken_image_or_a_script_error_is_caught(tmp_path: Path, browser: str) -> None:
    """The browser check can fail: an image whose data does not decode, and a script that throws and logs."""
    broken = Html('<img alt="broken one" src="data:image/png;base64,iVBORw0KGgoAAAA">')
    script = Html("<script>console.error('logged'); undefinedFunction();</script>")
    (tmp_path / "page.html").write_text(small_page(broken, script), encoding="utf-8")
    found = check_page(tmp_path / "page.html", browser)
    assert "broken image: broken one" in found
    assert any(p.startswith("console error: logged") for p in found)
    assert any("undefinedFunction is not defined" in p for p in found)


def test_stage_times_come_from_the_records_and_say_what_was_not_recorded(tmp_path: Path) -> None:
    with mlflow.start_run(run_name="baseline-42") as run:
        mlflow.set_tags({"git_commit": "abcdef0123", "git_dirty": "true", "machine": "Linux; a CPU; 2 cores"})
        time.sleep(0.05)
        record = write_record(tmp_path / "baseline-42.json", run.info.run_id, {"classifier_uri": "models:/m-1"})
    compared = {
        "started": "2026-01-02 03:04:05 UTC",
        "seconds": 12.5,
        "tags": {"git_commit": "1234567890", "git_dirty": "false"},
        "mlflow": {"experiment_id": "0", "run_id": "feedc0ffee"},
    }
    zen2 = Path(__file__).parent / "data" / "cpuinfo" / "amd-epyc-23-49-0-rome.txt"
    audited = {"seconds": 73.4, "machine": fingerprint(2, None, cpuinfo=zen2, environ={})}
    rows = stage_times({"baseline-42": record}, {"baseline-42": 1.5}, compared, audited)
    assert [r.stage for r in rows] == ["download", "split", "audit", "train@baseline-42", "compare"]
    assert rows[0].seconds is None and "not recorded" in rows[0].source
    assert (rows[2].seconds, rows[2].commit, rows[2].started) == (73.4, "–", "–")
    assert rows[2].source.startswith("reports/audit.json") and "AuthenticAMD 23/49/0" in rows[2].machine
    assert "(metrics/train/baseline-42.json)" in rows[3].source and "records/train/baseline-42.json" in rows[3].source
    assert rows[3].commit == "abcdef0 (dirty)" and rows[3].seconds >= 0.05 and "training alone 1.5 s" in rows[3].source
    assert rows[3].machine == "Linux; a CPU; 2 cores" and rows[3].started.endswith(" UTC")
    assert (rows[4].commit, rows[4].seconds, rows[4].started) == ("1234567", 12.5, "2026-01-02 03:04:05 UTC")
    assert rows[4].source == "reports/compare.json (run feedc0ff)"


def test_a_compare_json_without_provenance_asks_for_a_new_compare() -> None:
    with pytest.raises(StudyFileMissing, match=r"no provenance .* rerun `dvc repro compare`"):
        compare_provenance({"champion": "baseline"})


def plant_champion(cfg, variant: str, seed: int) -> Answers:
    """A saved (untrained) model for run (variant, seed) and its test answers written as the compare stage writes
    them; return the answers."""
    from catdog.data.dataset import configured_split
    from catdog.settings.run_files import Outputs
    from catdog.train.models import build_model

    model = build_model(cfg, num_classes=2)
    path = Outputs.study(cfg.trainer, variant, seed).model
    path.parent.mkdir(parents=True)
    model.save(path)
    test = configured_split(cfg.data, "test", TINY_SIZE)
    answers = Answers.of(model.predict(test.images.astype("float32"), verbose=0))
    other = Answers(1 - answers.predicted, 1 - answers.probability)  # another run's rows, which must not be read
    runs = {"scaled-1": other, f"{variant}-{seed}": answers}
    write_predictions(cfg.compare.predictions, list(test.paths), test.labels, CLASSES, runs)
    return answers


def test_explain_shows_each_mistake_and_right_answers_with_their_heatmaps(split_data: Path) -> None:
    cfg = tiny_config("baseline")
    plant_champion(cfg, "baseline", 7)
    ex = explain(cfg, "baseline", 7)
    assert (ex.n_test, ex.image_size) == (8, TINY_SIZE)
    assert len(ex.misclassified) == ex.wrong_total and all(e.true != e.predicted for e in ex.misclassified)
    right = {c: 4 - sum(e.true == c for e in ex.misclassified) for c in ("cats", "dogs")}  # 4 test images a class
    assert sorted(e.true for e in ex.correct) == sorted(c for c, n in right.items() for _ in range(min(n, 3)))
    assert all(e.true == e.predicted for e in ex.correct)
    for e in ex.misclassified + ex.correct:
        assert Image.open(io.BytesIO(e.overlay)).size == (TINY_SIZE, TINY_SIZE) and 0.5 <= e.probability <= 1
        assert e.heatmap.shape == (TINY_SIZE, TINY_SIZE) and e.heatmap.min() >= 0 and e.heatmap.max() <= 1


def test_explain_reads_the_champions_answers_and_predicts_nothing(
    split_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answers on the test split come from compare's file, the one prediction pass is Grad-CAM's."""
    import keras

    cfg = tiny_config("baseline")
    answers = plant_champion(cfg, "baseline", 7)
    monkeypatch.setattr(keras.Model, "predict", lambda *a, **k: pytest.fail("the report predicted the test split"))
    ex = explain(cfg, "baseline", 7)
    assert ex.wrong_total == int((answers.predicted != labels_of(cfg)).sum())
    shown = {e.path: e for e in ex.misclassified + ex.correct}
    for i, path in enumerate(e.path for e in read_manifest(split_data / "data" / "split" / "test.csv")):
        if path in shown:
            assert shown[path].probability == answers.probability[i]
            assert shown[path].predicted == CLASSES[answers.predicted[i]]


def labels_of(cfg) -> np.ndarray:
    return np.array([CLASSES.index(e.label) for e in read_manifest(Path(cfg.data.split_dir) / "test.csv")])


PATHS, LABELS = ["a.jpg", "b.jpg"], np.array([0, 1])
HEADER = "run,path,label,predicted,probability\n"


def test_predictions_read_back_exactly_as_compare_wrote_them(tmp_path: Path) -> None:
    answers = Answers.of(np.array([[0.1, 2.3], [1 / 3, -1e-7]], np.float32))
    write_predictions(tmp_path / "p.csv", PATHS, LABELS, CLASSES, {"baseline-42": answers})
    back = read_predictions(tmp_path / "p.csv", "baseline-42", PATHS, LABELS, CLASSES)
    assert back.predicted.tolist() == [1, 0] and back.probability.tolist() == answers.probability.tolist()
    assert answers.probability.dtype == np.float64 and 0.5 < answers.probability.min() < 1


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, r"p.csv not found; run `dvc repro compare`"),
        ("path,label\na.jpg,cats\n", r"p.csv: expected columns run, path, label, predicted, probability"),
        (HEADER + "scaled-1,a.jpg,cats,cats,0.9\n", r"p.csv: no rows for run 'baseline-42', not the 2 test images"),
        (HEADER + "baseline-42,b.jpg,dogs,dogs,0.9\nbaseline-42,a.jpg,cats,cats,0.9\n", r"p.csv: 2 rows for run"),
        (
            HEADER + "baseline-42,a.jpg,cats,birds,0.9\nbaseline-42,b.jpg,dogs,dogs,0.9\n",
            r"p.csv: run 'baseline-42' has a row that is not",
        ),
        (
            HEADER + "baseline-42,a.jpg,cats,cats,high\nbaseline-42,b.jpg,dogs,dogs,0.9\n",
            r"not a class and a probability",
        ),
    ],
    ids=["missing", "columns", "another run", "order", "class", "probability"],
)
def test_a_missing_or_garbled_predictions_file_names_it_and_the_stage(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "p.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(StudyFileMissing, match=problem) as caught:
        read_predictions(path, "baseline-42", PATHS, LABELS, CLASSES)
    assert "dvc repro compare" in caught.value.line() and "\n" not in caught.value.line()
