"""Tracking: an absent server fails fast and by name; parallel runs share one SQLite store safely."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import keras
import mlflow
import mlflow.utils.environment as model_environment
import numpy as np
import pytest
from conftest import tiny_config
from dataset_race import log_the_split_while_another_run_inserts_it_first

from catdog.serve.classifier import log_classifier
from catdog.team.loopback import free_port
from catdog.tracking.connect import TrackingUnavailable, check_reachable, tracking_uri
from catdog.tracking.provenance import flat_params
from catdog.tracking.registry import log_model, requirements
from catdog.train.models import build_model
from catdog.train.run import train


@pytest.fixture
def health_server() -> Iterator[Callable[[int], str]]:
    """Start real HTTP servers on 127.0.0.1 answering `/health` with a given status; each call returns its URI."""
    running: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    def start(status: int) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                code = HTTPStatus(status) if self.path == "/health" else HTTPStatus.NOT_FOUND
                body = code.phrase.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
        thread.start()
        running.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (401, "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN"),
        (403, "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN"),
        (404, "not an MLflow tracking server at that path"),
        (500, "see the tracking server's log"),
        (503, "see the tracking server's log"),
    ],
)
def test_a_server_answering_an_http_error_is_reported_as_that(health_server, status: int, hint: str) -> None:
    uri = health_server(status)
    with pytest.raises(TrackingUnavailable) as failure:
        check_reachable(uri, timeout_s=5)
    message = str(failure.value)
    assert f"HTTP {status} {HTTPStatus(status).phrase}" in message
    assert uri in message
    assert hint in message
    assert "did not answer" not in message


def test_a_healthy_server_passes_the_check(health_server) -> None:
    check_reachable(health_server(200), timeout_s=5)


def test_an_absent_tracking_server_fails_fast_naming_the_uri(split_data: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(TrackingUnavailable, match=f"{uri} did not answer"):
        train(tiny_config("baseline", f"tracking.uri={uri}"))
    assert time.monotonic() - started < 10
    assert not (split_data / "data" / "cache").exists(), "no data may be read before the tracker answers"


def test_environment_beats_config_and_default_is_absolute(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.invalid")
    assert tracking_uri("sqlite:///x.db") == "http://example.invalid"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    assert tracking_uri("") == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_params_are_the_flattened_resolved_config() -> None:
    params = flat_params(tiny_config("transfer"))
    assert params["model.net.weights"] == "None"
    assert params["trainer.checkpoint_dir"] == "checkpoints/study/transfer/seed-42"
    assert params["augment.rotation"] == "[-0.3, 0.2]"


def test_logging_a_model_starts_no_python_and_pins_the_requirements(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside a uv project (a test's or a user's folder; in the project MLflow runs `uv export`), MLflow infers a
    model's requirements by loading it in a fresh Python (a TensorFlow start) unless they are given: both flavours
    get the pinned list, and no Python is started."""
    started: list = []
    real_init = subprocess.Popen.__init__

    def record(self, args, *rest, **kwargs):
        started.append(args)
        return real_init(self, args, *rest, **kwargs)

    inferred: list = []

    def no_inference(*args, **kwargs):
        inferred.append(args)
        raise AssertionError("MLflow tried to infer the model's requirements")

    monkeypatch.setattr(subprocess.Popen, "__init__", record)
    monkeypatch.setattr(model_environment, "_infer_requirements", no_inference)
    keras.utils.set_random_seed(0)
    model = build_model(tiny_config("baseline"), num_classes=2)
    with mlflow.start_run():
        uris = [
            log_model(model, np.zeros((2, 32, 32, 3), "float32")),
            log_classifier(model, ["cats", "dogs"]).model_uri,
        ]
    pythons = [
        args for args in started if Path(str(args[0] if isinstance(args, list) else args)).name.startswith("python")
    ]
    assert inferred == [] and pythons == [], pythons  # git is asked for the source tags; no Python is started
    for uri in uris:
        pinned = mlflow.pyfunc.get_model_dependencies(uri)
        assert Path(pinned).read_text().split() == requirements()


def test_runs_logging_the_same_split_at_the_same_moment_both_get_it(workdir: Path, isolated_mlflow: str) -> None:
    """On SQLite (tests/dataset_race.py; test_team races them on PostgreSQL)."""
    log_the_split_while_another_run_inserts_it_first(isolated_mlflow, workdir)
