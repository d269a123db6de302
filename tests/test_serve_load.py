"""The served classifier under hostile files and load (bench/serve_load.py's small version): `mlflow models serve`
on loopback answers each hostile file with a label or an error row and then labels the next request, and concurrent
clients with hostile requests mixed in get no error while the server's memory stays within a bound."""

from __future__ import annotations

import sys

import hostile
import keras
import mlflow
import pytest
from conftest import CLASS_COLOURS, REPO, jpeg_bytes, tiny_config

from catdog.serve.classifier import log_classifier
from catdog.train.models import build_model

sys.path.insert(0, str(REPO / "bench"))
import serve_load  # noqa: E402
from served import MIB, ServedModel, request_body  # noqa: E402

CLASSES = list(CLASS_COLOURS)
CLIENTS = 4
REQUESTS = 60
# Growth of the server's resident memory over a run of small images and refused bombs; the 100 MP PNG alone would
# add 300 MiB were it decoded.
MEMORY_BOUND_MIB = 150


def mixed_requests(good: list[bytes]) -> tuple[list[bytes], list[list[str | None]]]:
    """REQUESTS bodies, every third a hostile file (the bombs among them), with what each row must get."""
    hostile_cases = [c for c in hostile.corpus() if c.error is not None]
    bodies, expected = [], []
    for i in range(REQUESTS):
        if i % 3 == 2:
            case = hostile_cases[(i // 3) % len(hostile_cases)]
            bodies.append(request_body([case.data, good[i % len(good)]]))
            expected.append([case.error, None])
        else:
            bodies.append(request_body([good[i % len(good)]]))
            expected.append([None])
    return bodies, expected


@pytest.mark.slow
def test_the_server_survives_hostile_files_and_load_in_bounded_memory(tmp_path, isolated_mlflow: str) -> None:
    keras.utils.set_random_seed(7)
    with mlflow.start_run():
        uri = log_classifier(build_model(tiny_config("scaled"), len(CLASSES)), CLASSES).model_uri
    good = [jpeg_bytes(CLASS_COLOURS[CLASSES[i % 2]], seed=i) for i in range(8)]
    bodies, expected = mixed_requests(good)
    with ServedModel(uri, tmp_path / "serve.log", {"MLFLOW_TRACKING_URI": isolated_mlflow}) as served:
        serve_load.run_load(served, [request_body([g]) for g in good], CLIENTS)  # tracing, first allocations
        served.reset_peak()
        idle = served.memory("VmRSS")
        for case in hostile.corpus():
            status, text = served.post(request_body([case.data]))
            assert serve_load.row_errors(status, text, [case.error]) == [], case.name
            status, text = served.post(request_body([good[0]]))
            assert serve_load.row_errors(status, text, [None]) == [], f"the request after {case.name}"
        results, _ = serve_load.run_load(served, bodies, CLIENTS)
        problems = [
            problem
            for (status, text, _), want in zip(results, expected, strict=True)
            for problem in serve_load.row_errors(status, text, want)
        ]
        assert problems == []
        peak = served.memory("VmHWM")
    assert (peak - idle) / MIB < MEMORY_BOUND_MIB, f"server memory {idle / MIB:.0f} -> {peak / MIB:.0f} MiB"


def test_an_answer_is_checked_row_by_row() -> None:
    ok = '{"predictions": [{"label": "cats", "probability": 0.9, "error": ""}, {"label": "", "probability": 0.0, "error": "empty file (0 bytes)"}]}'  # noqa: E501
    assert serve_load.row_errors(200, ok, [None, "empty file"]) == []
    assert serve_load.row_errors(200, ok, [None, None]) == ["no label: empty file (0 bytes)"]
    assert serve_load.row_errors(200, ok, ["empty", "empty"])[0].startswith("expected an error with 'empty'")
    assert serve_load.row_errors(200, ok, [None]) == ["2 rows for 1 images"]
    assert serve_load.row_errors(503, "busy", [None]) == ["HTTP 503: busy"]


def test_the_latency_summary_reads_percentiles_and_rates() -> None:
    results = [(200, "", seconds / 1000) for seconds in range(1, 101)]  # 1 ms .. 100 ms
    summary = serve_load.latency_summary(results, wall_s=2.0, images=300)
    assert (summary["p50_ms"], summary["p99_ms"], summary["max_ms"]) == (50.5, 99.0, 100.0)
    assert (summary["requests_per_s"], summary["images_per_s"]) == (50.0, 150.0)
