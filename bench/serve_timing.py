"""bench/predict.py's other two lines: the model-only bound (the Keras model and softmax on images decoded
beforehand, chunked as the classifier chunks them) and the served path (`mlflow models serve --env-manager local`,
one HTTP request per batch of base64 images, JSON both ways, the pyfunc in between).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from catdog.serve.classifier import MODEL_BATCH, ImageClassifier, softmax
from catdog.serve.schema import IMAGE_COLUMN

START_LIMIT_S = 300


def classifier_of(predictor) -> ImageClassifier:
    """The `ImageClassifier` behind a predictor from `load_predictor`: a wrapped .keras file's, or a pyfunc's."""
    owner = getattr(predictor, "__self__", None)
    return owner if isinstance(owner, ImageClassifier) else owner.unwrap_python_model()


def decoded(files: list[Path], classifier: ImageClassifier) -> np.ndarray:
    """The files as the uint8 images the classifier would decode them to, all at once (not timed)."""
    return np.stack([classifier.decode(f.read_bytes()) for f in files])


def bound_labels(images: np.ndarray, classifier: ImageClassifier, batch_size: int) -> list[str]:
    """Labels from the model and softmax alone, in calls of `batch_size` images chunked by MODEL_BATCH inside."""
    labels = []
    for start in range(0, len(images), batch_size):
        call = images[start : start + batch_size]
        for chunk in range(0, len(call), MODEL_BATCH):
            batch = call[chunk : chunk + MODEL_BATCH].astype(np.float32)
            probs = softmax(np.asarray(classifier.model.predict_on_batch(batch), dtype=np.float64))
            labels += [classifier.classes[int(i)] for i in probs.argmax(axis=1)]
    return labels


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mlflow models serve` of a logged classifier URI from this environment (its bin folder first on PATH), one
    worker, on a free local port; stopped with its whole process group."""

    def __init__(self, uri: str) -> None:
        bin_dir = str(Path(sys.executable).parent)
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile("w+", prefix="catdog-serve-", suffix=".log")  # noqa: SIM115 (closed in stop)
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        command = [f"{bin_dir}/mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
                   "-h", "127.0.0.1", "-p", str(self.port), "-w", "1"]  # fmt: skip
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"

    def wait(self) -> None:
        deadline = time.monotonic() + START_LIMIT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise SystemExit(f"mlflow models serve exited ({self.process.returncode}):\n{self.log.read()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(1)
        raise SystemExit(f"mlflow models serve did not answer within {START_LIMIT_S} s")

    def labels(self, files: list[Path], batch_size: int) -> list[str]:
        """One request per `batch_size` files (read and base64-encoded here, as a client would); the labels."""
        labels = []
        for start in range(0, len(files), batch_size):
            rows = [[base64.b64encode(f.read_bytes()).decode("ascii")] for f in files[start : start + batch_size]]
            body = json.dumps({"dataframe_split": {"columns": [IMAGE_COLUMN], "data": rows}}).encode()
            request = urllib.request.Request(f"{self.url}/invocations", data=body,
                                             headers={"Content-Type": "application/json"})  # fmt: skip
            with urllib.request.urlopen(request, timeout=300) as response:
                labels += [r["label"] for r in json.loads(response.read())["predictions"]]
        return labels

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass
        self.log.close()
