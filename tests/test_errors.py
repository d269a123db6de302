"""One error path: a user's mistake, run as the user runs it, prints one line on stderr (what, where, the command that
fixes it), exits non-zero without a traceback and leaves nothing behind; a debug variable shows the traceback; a bug
keeps its traceback."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import (
    KERAS_WEIGHTS_NAME,
    REPO,
    WEIGHTS_SIZE,
    all_runs,
    expected_overrides,
    make_dataset,
    run_entry,
    without_tensorflow,
)

from catdog.common.errors import UserError, one_line, reports_user_errors
from catdog.common.files import sha256_file
from catdog.data.download import ArchiveError, DownloadError
from catdog.data.require import DataMissing
from catdog.predict.label_files import PredictError, UsageError
from catdog.settings.checks import ConfigError
from catdog.tracking.connect import StoreError, TrackingServerError, TrackingUnavailable
from catdog.train.fit import TrainingDiverged

GET_DATA = "`dvc repro split` (or `python src/download.py && python src/split.py`)"


def refusal(result: subprocess.CompletedProcess, code: int = 1, *, tensorflow: bool = False) -> str:
    """The one line a refused command printed on stderr, after checking its exit code and that it is alone (once
    TensorFlow loaded, besides what TensorFlow and MLflow print: `our_lines`)."""
    assert result.returncode == code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = our_lines(result.stderr) if tensorflow else result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def our_lines(stderr: str) -> list[str]:
    """stderr without what TensorFlow (absl) and MLflow's store set-up print, and without the decode progress bars
    (`catdog.data.dataset.decode_images`: on stderr whether or not it is a terminal)."""
    noise = ("I0000 ", "E0000 ", "W0000 ", "WARNING: All log messages", "To enable the following", "decode ")
    lines = [line for line in stderr.splitlines() if line.strip()]
    return [line for line in lines if not line.startswith(noise) and " INFO mlflow." not in line]


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    """An empty folder to run in, apart from tmp_path (which holds this test's tracking store)."""
    folder = tmp_path / "fresh"
    folder.mkdir()
    return folder


@pytest.fixture
def no_tensorflow(tmp_path: Path) -> dict[str, str]:
    """An environment in which importing TensorFlow fails: what passes in it fails before TensorFlow loads."""
    return without_tensorflow(os.environ, tmp_path, "tensorflow was imported before the mistake was found")


def test_training_in_a_fresh_folder_says_which_data_is_missing_and_how_to_get_it(
    fresh: Path, no_tensorflow: dict[str, str]
) -> None:
    result = run_entry("train.py", "variant=baseline", "trainer.epochs=1", cwd=fresh, env=no_tensorflow)
    line = refusal(result)
    assert line == (
        f"data error: {fresh / 'data' / 'raw' / 'cats_and_dogs_filtered'} not found (the data set is not "
        f"downloaded); fetch and split the data with {GET_DATA}"
    )
    assert list(fresh.iterdir()) == [], "the refused command left something behind"
    assert all_runs() == []


@pytest.mark.parametrize("script,manifest", [("train.py", "train"), ("compare.py", "train")])
def test_downloaded_but_not_split_names_the_manifest(
    fresh: Path, no_tensorflow: dict[str, str], script: str, manifest: str
) -> None:
    make_dataset(fresh / "data" / "raw")
    line = refusal(run_entry(script, cwd=fresh, env=no_tensorflow))
    assert line.startswith(f"data error: {fresh / 'data' / 'split' / f'{manifest}.csv'} not found")
    assert line.endswith(GET_DATA)
    assert sorted(p.name for p in fresh.iterdir()) == ["data"]


def test_split_before_download_says_to_download(fresh: Path, no_tensorflow: dict[str, str]) -> None:
    line = refusal(run_entry("split.py", cwd=fresh, env=no_tensorflow))
    assert line.startswith(f"data error: {fresh / 'data' / 'raw' / 'cats_and_dogs_filtered'} not found")
    assert "`dvc repro download` (or `python src/download.py`)" in line
    assert list(fresh.iterdir()) == []


def test_a_mirror_that_is_not_a_zip_is_one_line_naming_the_variable(fresh: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "archive.zip"
    mirror.write_text("an HTML error page, saved under the archive's name")
    env = {**os.environ, "CATDOG_DATA_MIRROR": str(mirror)}
    pinned = "0" * 64  # a pinned archive is checked before it is opened
    line = refusal(run_entry("download.py", f"data.archive_sha256={pinned}", cwd=fresh, env=env))
    assert line.startswith(
        f"download error: CATDOG_DATA_MIRROR={mirror}: the archive's sha256 is {sha256_file(mirror)}, "
        f"but data.archive_sha256 pins {pinned}"
    )
    assert f"point CATDOG_DATA_MIRROR at a copy whose sha256 is {pinned}" in line
    assert not (fresh / "outputs").exists()
    line = refusal(run_entry("download.py", cwd=fresh, env=env))  # the study pins no archive: the zip is checked
    assert line.startswith(f"download error: CATDOG_DATA_MIRROR={mirror}: not a readable zip archive")
    assert "point CATDOG_DATA_MIRROR at a copy of cats_and_dogs_filtered.zip" in line
    assert "`dvc repro download`" in line
    assert not (fresh / "outputs").exists()


def test_the_debug_variables_show_the_traceback(fresh: Path, no_tensorflow: dict[str, str]) -> None:
    for variable in ("CATDOG_DEBUG", "HYDRA_FULL_ERROR"):
        result = run_entry("train.py", cwd=fresh, env={**no_tensorflow, variable: "1"})
        assert result.returncode == 1 and "Traceback" in result.stderr, variable
        assert "catdog.data.require.DataMissing" in result.stderr


def test_a_refused_command_never_removes_a_folder_it_did_not_create(fresh: Path, no_tensorflow: dict[str, str]) -> None:
    kept = fresh / "outputs" / "keep"
    kept.mkdir(parents=True)
    (kept / "notes.txt").write_text("someone else's")
    refusal(run_entry("train.py", "hydra.run.dir=outputs/keep", cwd=fresh, env=no_tensorflow))
    assert (kept / "notes.txt").read_text() == "someone else's"
    # A folder that was there, empty: Hydra's files land in it, and it stays (with them).
    (fresh / "outputs" / "was-empty").mkdir()
    refusal(run_entry("train.py", "hydra.run.dir=outputs/was-empty", cwd=fresh, env=no_tensorflow))
    assert (fresh / "outputs" / "was-empty" / ".hydra").is_dir()
    # A new run folder inside a folder that was there: the run's own is gone, the one it found stays.
    refusal(run_entry("train.py", "hydra.run.dir=outputs/new/run", cwd=fresh, env=no_tensorflow))
    assert sorted(p.name for p in (fresh / "outputs").iterdir()) == ["keep", "was-empty"]


def test_a_refused_sweep_leaves_nothing_behind(fresh: Path, no_tensorflow: dict[str, str]) -> None:
    result = run_entry("train.py", "--multirun", "seed=1,2", "trainer.epochs=0", cwd=fresh, env=no_tensorflow)
    assert refusal(result, 2) == "config error: trainer.epochs: got 0; expected an integer >= 1"
    assert list(fresh.iterdir()) == []


def test_an_unknown_variant_leaves_no_folder_either(fresh: Path) -> None:
    """A mistake Hydra reports itself (its message lists the options) fails before Hydra makes a run folder."""
    result = run_entry("train.py", "variant=fancy", cwd=fresh)
    assert result.returncode == 1 and "Could not find 'variant/fancy'" in result.stderr
    assert list(fresh.iterdir()) == []


def test_the_wrapper_prints_one_line_and_exits_with_the_errors_code(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CATDOG_DEBUG", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    cleaned = []

    def refused() -> None:
        raise ConfigError("trainer.epochs: got 0; expected an integer >= 1\nseed: got -1; expected an integer >= 0")

    with pytest.raises(SystemExit) as exit_:
        reports_user_errors(refused, on_refusal=lambda: cleaned.append(True))()
    assert exit_.value.code == 2 and cleaned == [True]
    assert capsys.readouterr().err == (
        "config error: trainer.epochs: got 0; expected an integer >= 1; seed: got -1; expected an integer >= 0\n"
    )

    def bug() -> None:
        raise KeyError("a bug, not a mistake")

    with pytest.raises(KeyError):
        reports_user_errors(bug, on_refusal=lambda: cleaned.append(False))()
    assert cleaned == [True], "a bug is no refusal: what it left is evidence"
    monkeypatch.setenv("CATDOG_DEBUG", "1")
    with pytest.raises(ConfigError):
        reports_user_errors(refused)()


def test_one_line_runs_a_colon_into_the_next_line() -> None:
    assert one_line("could not download the archive:\n  a: refused\n  b: timed out\n") == (
        "could not download the archive: a: refused; b: timed out"
    )


@pytest.mark.parametrize(
    "error,kind,code",
    [
        (ConfigError, "config error", 2),
        (DataMissing, "data error", 1),
        (StoreError, "tracking error", 1),
        (TrackingUnavailable, "tracking error", 1),
        (TrackingServerError, "tracking error", 1),
        (DownloadError, "download error", 1),
        (ArchiveError, "download error", 1),
        (PredictError, "predict", 2),
        (UsageError, "predict", 2),
        (TrainingDiverged, "training error", 1),
    ],
)
def test_every_domain_error_is_a_user_error(error: type[UserError], kind: str, code: int) -> None:
    assert issubclass(error, UserError) and (error.kind, error.exit_code) == (kind, code)


@pytest.mark.slow
def test_a_missing_model_in_compare_names_the_run_and_the_command(split_data: Path, isolated_mlflow: str) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": isolated_mlflow}
    line = refusal(run_entry("compare.py", *expected_overrides(), cwd=split_data, env=env), tensorflow=True)
    model = Path("models") / "baseline-42" / "model.keras"
    assert line == (
        f"model error: run 'baseline-42': model file {model} not found; run `dvc repro train@baseline-42` "
        "(or `python src/train.py variant=baseline seed=42 trainer.outputs=study`)"
    )
    assert all_runs() == []
    assert not (split_data / "outputs").exists()


@pytest.mark.slow
def test_transfer_without_its_weights_offline_says_which_file_and_how_to_provide_it(
    split_data: Path, isolated_mlflow: str, tmp_path: Path
) -> None:
    """An ad-hoc `model=transfer` run takes the weights' own 224 px; with an empty Keras cache and no way out (a
    proxy that refuses every connection), one line names the file Keras looked for."""
    home = tmp_path / "keras_home"
    home.mkdir()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": isolated_mlflow,
        "KERAS_HOME": str(home),
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }
    overrides = ["model=transfer", "augment=on", "trainer.epochs=1", "trainer.batch_size=8", *expected_overrides()]
    result = run_entry("train.py", *overrides, cwd=split_data, env=env)  # its timeout catches a hung download
    line = refusal(result, tensorflow=True)
    assert "Connection refused)" in line, "the download should fail on the refused connection, not time out"
    weights = home / "models" / KERAS_WEIGHTS_NAME.format(size=WEIGHTS_SIZE)
    assert line.startswith(f"model error: ImageNet weights for MobileNetV2 at {WEIGHTS_SIZE} px not found: ")
    assert f"Keras looked for {weights} " in line
    assert "set KERAS_HOME to a folder whose models/ holds that file, or allow the download" in line


def test_the_transfer_models_default_size_is_its_weights_own() -> None:
    from catdog.settings.params import compose_config

    conf = REPO / "conf"
    assert compose_config(conf, ["model=transfer"]).trainer.image_size == WEIGHTS_SIZE
    assert compose_config(conf, ["variant=transfer"]).trainer.image_size == WEIGHTS_SIZE
    assert compose_config(conf).trainer.image_size == 160  # the CNN's default is unchanged


def test_the_throughput_benchmark_refuses_without_data_before_it_starts_a_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import throughput

    def started(*args: object) -> None:
        raise AssertionError("a child process was started without the data")

    monkeypatch.setattr(throughput, "ROOT", tmp_path)
    monkeypatch.setattr(throughput, "run_isolated", started)
    dataset = tmp_path / "data" / "raw" / "cats_and_dogs_filtered"
    with pytest.raises(DataMissing, match=f"^{re.escape(str(dataset))} not found .*{re.escape(GET_DATA)}$"):
        throughput.main(["--variants", "baseline", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
