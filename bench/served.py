"""A model served by `mlflow models serve` on loopback, as the README serves it (`--env-manager local`, this
environment's bin/ on PATH), with what a load test reads of it: answers to image requests, and the memory of the
server's processes (its own session: the CLI and the uvicorn it starts), from /proc."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path

from catdog.team.loopback import free_port

START_LIMIT_S = 300
REQUEST_TIMEOUT_S = 120
MIB = 1 << 20


def request_body(files: list[bytes]) -> bytes:
    """The /invocations body for image files: a `dataframe_split` with one base64 `image` per row."""
    rows = [[base64.b64encode(data).decode("ascii")] for data in files]
    return json.dumps({"dataframe_split": {"columns": ["image"], "data": rows}}).encode()


class ServedModel:
    """`mlflow models serve -m <uri>` in a session of its own, started and stopped as a context manager.

    `env` adds to this process's environment (e.g. MLFLOW_TRACKING_URI, MLFLOW_PYFUNC_INFERENCE_CONFIG)."""

    def __init__(self, model_uri: str, log: Path, env: dict[str, str] | None = None, workers: int = 1) -> None:
        self.model_uri, self.log, self.workers = model_uri, log, workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        bin_dir = str(Path(sys.executable).parent)
        self.env = {**os.environ, **(env or {}), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> ServedModel:
        bin_dir = Path(sys.executable).parent
        command = [str(bin_dir / "mlflow"), "models", "serve", "-m", self.model_uri, "--env-manager", "local",
                   "-h", "127.0.0.1", "-p", str(self.port), "-w", str(self.workers)]  # fmt: skip
        with open(self.log, "w") as handle:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            self.wait_until_up()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + START_LIMIT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited with {self.process.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"mlflow models serve did not answer within {START_LIMIT_S} s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def pids(self) -> list[int]:
        """The live processes of the server's session (the CLI, and the uvicorn it runs)."""
        found = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    stat = Path(f"/proc/{name}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[3]) == self.process.pid:  # field 6: the session id
                    found.append(int(name))
        return found

    def memory(self, field: str) -> int:
        """`field` of /proc/<pid>/status (VmRSS: now, VmHWM: peak since start or `reset_peak`), summed over the
        session's processes, in bytes."""
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


def bomb_png(width: int, height: int) -> bytes:
    """A black RGB PNG of width x height, compressed as it is written (never held uncompressed): 20,000 x 20,000,
    400 megapixels, is a 1.2 MB file that a decoder trusting its header turns into 1.2 GB."""
    compressor, row, parts = zlib.compressobj(9), bytes(1 + 3 * width), []
    parts += [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = b"".join(parts)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
