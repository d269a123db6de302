"""A model served by `mlflow models serve` on loopback, as the README serves it (`--env-manager local`, one uvicorn
worker, this environment's bin/ first on PATH): started and stopped as a context manager, with what a benchmark or
a test reads of it: answers to image requests, and the memory of the server's processes (its own session: the CLI
and the uvicorn it starts) from /proc. bench/predict.py, bench/serve_load.py and the tests that serve a model
(tests/test_predict.py, tests/test_serve_load.py) all use this one."""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import sys
from pathlib import Path

from catdog.common.processes import stop_group
from catdog.data.manifests import read_manifest
from catdog.data.require import require_data
from catdog.serve.schema import IMAGE_COLUMN
from catdog.team.loopback import ServerStartError, free_port, wait_http

START_LIMIT_S = 300
REQUEST_TIMEOUT_S = 300
MIB = 1 << 20


def first_test_images(cfg, count: int) -> list[Path]:
    """The first `count` images of the test split (the user is told to run `dvc repro split` where there is none)."""
    require_data(cfg.data, ("test",))
    return [Path(cfg.data.dataset_dir) / e.path for e in read_manifest(Path(cfg.data.split_dir) / "test.csv")[:count]]


def request_body(files: list[bytes]) -> bytes:
    """The /invocations body for image files: a `dataframe_split` with one base64 image per row."""
    rows = [[base64.b64encode(data).decode("ascii")] for data in files]
    return json.dumps({"dataframe_split": {"columns": [IMAGE_COLUMN], "data": rows}}).encode()


class ServedModel:
    """`mlflow models serve -m <uri>` in a session of its own, its output in `log`; `env` adds to this process's
    environment (e.g. MLFLOW_TRACKING_URI, MLFLOW_PYFUNC_INFERENCE_CONFIG)."""

    def __init__(self, model_uri: str, log: Path, env: dict[str, str] | None = None) -> None:
        self.model_uri, self.log, self.port = model_uri, log, free_port()
        bin_dir = str(Path(sys.executable).parent)
        self.env = {**os.environ, **(env or {}), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        self.command = [f"{bin_dir}/mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
                        "-h", "127.0.0.1", "-p", str(self.port), "-w", "1"]  # fmt: skip

    def __enter__(self) -> ServedModel:
        with open(self.log, "w") as handle:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                                            start_new_session=True)  # fmt: skip
        try:
            wait_http(f"http://127.0.0.1:{self.port}/ping", self.process, self.log, "the server", START_LIMIT_S)
        except ServerStartError as exc:
            self.__exit__()
            raise RuntimeError(str(exc)) from None
        return self

    def __exit__(self, *exc: object) -> None:
        stop_group(self.process.pid, grace_s=30)
        self.process.wait()

    def post(self, body: bytes, connection: http.client.HTTPConnection | None = None) -> tuple[int, str]:
        """(status, text) of an /invocations request, on `connection` (kept alive) or a new one."""
        conn = connection or http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_S)
        try:
            conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read().decode(errors="replace")
        finally:
            if connection is None:
                conn.close()

    def predict(self, files: list[bytes]) -> tuple[int, list[dict]]:
        """(status, rows) for image files; rows is empty unless the status is 200."""
        status, text = self.post(request_body(files))
        return status, json.loads(text)["predictions"] if status == 200 else []

    def labels(self, files: list[Path], batch_size: int) -> list[str]:
        """The files' labels, one request per `batch_size` of them, read and encoded here as a client would."""
        labels = []
        for start in range(0, len(files), batch_size):
            status, rows = self.predict([f.read_bytes() for f in files[start : start + batch_size]])
            if status != 200:
                raise RuntimeError(f"mlflow models serve answered HTTP {status}; its log: {self.log}")
            labels += [row["label"] for row in rows]
        return labels

    def pids(self) -> list[int]:
        """The live processes of the server's session (the CLI, and the uvicorn it runs)."""
        found = []
        for name in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[3]) == self.process.pid:  # field 6: the session id
                found.append(int(name))
        return found

    def memory(self, field: str) -> int:
        """`field` of /proc/<pid>/status (VmRSS: now; VmHWM: the peak since the start or `reset_peak`), summed over
        the session's processes, in bytes."""
        total = 0
        for pid in self.pids():
            try:
                lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            except OSError:
                continue
            total += sum(int(line.split()[1]) * 1024 for line in lines if line.startswith(f"{field}:"))
        return total

    def reset_peak(self) -> None:
        """Set each process's peak (VmHWM) to its current RSS: `5` to /proc/<pid>/clear_refs (Linux 4.0+)."""
        for pid in self.pids():
            with open(f"/proc/{pid}/clear_refs", "w") as handle:
                handle.write("5")
