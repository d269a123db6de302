"""Load on the served classifier: `--clients` concurrent clients post `--requests` requests of real test-split JPEGs
(`--images-per-request` each) to `mlflow models serve` on loopback, as the README serves it. Reports the errors (a
status other than 200, or a row with an error), latency p50/p95/p99, images/s and the server's peak memory. Then the
server's memory for one 400-megapixel PNG (20,000 x 20,000, a 1.2 MB file), refused by the pixel limit, and on a
second server whose limit is raised above it (MLFLOW_PYFUNC_INFERENCE_CONFIG), which decodes it as every server did
before the limit. The server is `served.py`'s; the clients run on its machine and take some of its CPU. Writes
results/serve_load.json and .md.

    uv run --locked python bench/serve_load.py --model models/transfer-42/model.keras   # a .keras file, logged first
    uv run --locked python bench/serve_load.py --model models:/catdog@champion   # a classifier in the tracking store
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import struct
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from outputs import RESULTS, run_record, save
from served import MIB, REQUEST_TIMEOUT_S, ServedModel, first_test_images, request_body

from catdog.common.console import quiet_console
from catdog.common.errors import reports_user_errors
from catdog.common.machine import available_cores
from catdog.predict.label_files import project_config
from catdog.predict.loading import store_uri

BOMB_SIDE = 20_000
RAISED_LIMIT = 500_000_000  # above the bomb's 400 megapixels: the server before the limit


def bomb_png(width: int, height: int) -> bytes:
    """A black RGB PNG of width x height, compressed as it is written (never held uncompressed): 20,000 x 20,000,
    400 megapixels, is a 1.2 MB file that a decoder trusting its header turns into 1.2 GB."""
    compressor, row = zlib.compressobj(9), bytes(1 + 3 * width)
    idat = b"".join([*(compressor.compress(row) for _ in range(height)), compressor.flush()])

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def client_loop(served: ServedModel, bodies: list[bytes], counter: itertools.count, out: list) -> None:
    """Post the bodies whose turn `counter` gives this client, one at a time on one kept-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=REQUEST_TIMEOUT_S)
    while (i := next(counter)) < len(bodies):
        started = time.perf_counter()
        try:
            status, text = served.post(bodies[i], conn)
        except (OSError, http.client.HTTPException) as exc:
            status, text = 0, f"{type(exc).__name__}: {exc}"
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=REQUEST_TIMEOUT_S)
        out[i] = (status, text, time.perf_counter() - started)
    conn.close()


def run_load(served: ServedModel, bodies: list[bytes], clients: int) -> tuple[list[tuple[int, str, float]], float]:
    """Each body posted once by `clients` concurrent clients: (status, text, seconds) per body, and the wall time."""
    out: list = [None] * len(bodies)
    counter, started = itertools.count(), time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda _: client_loop(served, bodies, counter, out), range(clients)))  # raises a client's error
    return out, time.perf_counter() - started


def row_errors(status: int, text: str, expected: list[str | None]) -> list[str]:
    """What is wrong with one answer, whose rows should get a label (None) or an error holding the given text."""
    if status != 200:
        return [f"HTTP {status}: {text[:200]}"]
    rows = json.loads(text)["predictions"]
    if len(rows) != len(expected):
        return [f"{len(rows)} rows for {len(expected)} images"]
    wrong = []
    for row, want in zip(rows, expected, strict=True):
        if want is None and (row["error"] or not row["label"]):
            wrong.append(f"no label: {row['error']}")
        elif want is not None and want not in row["error"].lower():
            wrong.append(f"expected an error with {want!r}, got {row}")
    return wrong


def latency_summary(results: list[tuple[int, str, float]], wall_s: float, images: int) -> dict:
    """Percentiles of the request latencies (ms), requests/s and images/s over the wall time."""
    ms = np.array([seconds for _, _, seconds in results]) * 1000
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50_ms": round(p50, 1), "p95_ms": round(p95, 1), "p99_ms": round(p99, 1), "max_ms": round(ms.max(), 1),
            "wall_s": round(wall_s, 2), "requests_per_s": round(len(results) / wall_s, 1),
            "images_per_s": round(images / wall_s, 1)}  # fmt: skip


def bomb_memory(served: ServedModel, body: bytes, good: bytes) -> dict:
    """The server's memory around one request for the 400-megapixel PNG, what it answered, and whether the next
    request (a real JPEG) still gets its label."""
    served.reset_peak()
    before = served.memory("VmRSS")
    started = time.perf_counter()
    status, text = served.post(body)
    seconds = time.perf_counter() - started
    peak, after = served.memory("VmHWM"), served.memory("VmRSS")
    row = json.loads(text)["predictions"][0] if status == 200 else {"label": "", "error": text[:200]}
    next_status, next_rows = served.predict([good])
    return {"status": status, "label": row["label"], "error": row["error"], "seconds": round(seconds, 2),
            "rss_before_mib": round(before / MIB), "peak_mib": round(peak / MIB), "rss_after_mib": round(after / MIB),
            "next_request_labelled": next_status == 200 and bool(next_rows[0]["label"])}  # fmt: skip


def prepare_model(spec: str, cfg, folder: Path) -> tuple[str, dict[str, str]]:
    """The model URI to serve and the server's environment: a .keras file is logged as the classifier pyfunc (with
    the configured classes and pixel limit) into a throwaway SQLite store in `folder`."""
    if not spec.endswith(".keras"):
        return spec, {"MLFLOW_TRACKING_URI": store_uri(cfg)}
    import keras
    import mlflow

    from catdog.serve.classifier import log_classifier

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    model = keras.models.load_model(spec, compile=False)
    with mlflow.start_run():
        info = log_classifier(model, list(cfg.data.classes), max_pixels=cfg.data.max_pixels, saved=Path(spec))
    return info.model_uri, {"MLFLOW_TRACKING_URI": uri}


def load_phase(served: ServedModel, files: list[bytes], args: argparse.Namespace) -> dict:
    """Warm up, then the timed load: its errors, latencies and the server's memory (idle, then peak)."""
    per = args.images_per_request
    batches = [[files[(i * per + k) % len(files)] for k in range(per)] for i in range(args.requests)]
    bodies = [request_body(batch) for batch in batches]
    run_load(served, bodies[: args.clients], args.clients)  # tracing and first allocations, untimed
    served.reset_peak()
    idle = served.memory("VmRSS")
    results, wall_s = run_load(served, bodies, args.clients)
    errors = [e for status, text, _ in results for e in row_errors(status, text, [None] * per)]
    return {"clients": args.clients, "requests": args.requests, "images_per_request": per, "errors": len(errors),
            "first_errors": errors[:5], **latency_summary(results, wall_s, args.requests * per),
            "server_idle_mib": round(idle / MIB), "server_peak_mib": round(served.memory("VmHWM") / MIB)}  # fmt: skip


def markdown(result: dict) -> str:
    load, bombs = result["load"], result["bomb"]
    lines = [
        "| clients | requests | images/request | errors | p50 ms | p95 ms | p99 ms | max ms | images/s "
        "| server RSS idle → peak MiB |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        f"| {load['clients']} | {load['requests']} | {load['images_per_request']} | {load['errors']} | "
        f"{load['p50_ms']} | {load['p95_ms']} | {load['p99_ms']} | {load['max_ms']} | {load['images_per_s']} | "
        f"{load['server_idle_mib']} → {load['server_peak_mib']} |",
        "",
        f"One request with a black {BOMB_SIDE:,} x {BOMB_SIDE:,} RGB PNG ({BOMB_SIDE**2 / 1e6:.0f} megapixels, a "
        f"{result['bomb_file_bytes'] / 1e6:.1f} MB file in a {result['bomb_request_bytes'] / 1e6:.1f} MB request), "
        "then one with a test JPEG:",
        "",
        "| server | answer | seconds | RSS before MiB | peak MiB | RSS after MiB | next request labelled |",
        "|---|---|--:|--:|--:|--:|---|",
    ]
    for name, b in bombs.items():
        answer = f"label {b['label']}" if b["label"] else f"error: {b['error']}"
        lines.append(f"| {name} | {answer} | {b['seconds']} | {b['rss_before_mib']} | {b['peak_mib']} | "
                     f"{b['rss_after_mib']} | {'yes' if b['next_request_labelled'] else 'NO'} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a .keras file, or a classifier's URI in the tracking store")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--images-per-request", type=int, default=1)
    parser.add_argument("--distinct-images", type=int, default=200, help="test-split images, cycled (default 200)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    cfg = project_config()
    files = [f.read_bytes() for f in first_test_images(cfg, args.distinct_images)]
    png = bomb_png(BOMB_SIDE, BOMB_SIDE)
    bomb = request_body([png])
    settings = {"model": f"`{args.model}`", "server": "`mlflow models serve`, 1 uvicorn worker, loopback",
                "clients": args.clients, "requests": args.requests, "images per request": args.images_per_request,
                "pixel limit": f"{cfg.data.max_pixels:,}"}  # fmt: skip
    # TensorFlow's threads in the server: its default, every core; the model's precision: as it was saved.
    result = {"run": run_record(__file__, argv, settings, available_cores(), None), "bomb_file_bytes": len(png),
              "bomb_request_bytes": len(bomb), "bomb": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        uri, env = prepare_model(args.model, cfg, Path(tmp))
        with ServedModel(uri, Path(tmp) / "serve.log", env) as served:
            result["load"] = load_phase(served, files, args)
            result["bomb"][f"pixel limit {cfg.data.max_pixels / 1e6:g} MP"] = bomb_memory(served, bomb, files[0])
        raised = {**env, "MLFLOW_PYFUNC_INFERENCE_CONFIG": json.dumps({"max_pixels": RAISED_LIMIT})}
        with ServedModel(uri, Path(tmp) / "serve-raised.log", raised) as served:
            served.predict(files[:1])  # warm
            name = f"limit raised to {RAISED_LIMIT / 1e6:g} MP (as before)"
            result["bomb"][name] = bomb_memory(served, bomb, files[0])
    save(args.out, "serve_load", "Load on the served classifier", result, markdown(result))
    return result


if __name__ == "__main__":
    quiet_console()
    reports_user_errors(main)()
