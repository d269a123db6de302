"""The console a user reads: TensorFlow's C++ start-up banner hidden, unless asked for (`CATDOG_DEBUG=1`, or
`TF_CPP_MIN_LOG_LEVEL` 0 or 1).

TensorFlow 2.21 prints, as it loads, oneDNN's notice (`port.cc`) and "Could not find cuda drivers"
(`cudart_stub.cc`), once per library it loads, before absl's logging is initialised: TF_CPP_MIN_LOG_LEVEL does not
reach them, and TF_ENABLE_ONEDNN_OPTS=0, which would silence one, changes the numbers. At its first device query it
adds `cuInit`'s error where there is no GPU. So while `tensorflow` is imported and lists its devices, file descriptor
2 goes to a temporary file, whose lines are then written to stderr without exactly those; TF_CPP_MIN_LOG_LEVEL
defaults to 2 (errors only) for what TensorFlow logs later. Every entry point calls `quiet_console` first.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from importlib.machinery import ModuleSpec
from types import ModuleType

LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
DEBUG_ENV = "CATDOG_DEBUG"
QUIET_LEVEL = "2"  # TensorFlow's own: 0 all, 1 no INFO, 2 no WARNING, 3 no ERROR
# absl's notice before its first pre-initialisation line, and the lines TensorFlow 2.21 prints as it starts.
BANNER = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IWEF]\d{4} [\d:.]+ +\d+ (port|cudart_stub|cpu_feature_guard)\.cc:\d+\] "
    rb"|[IWEF]\d{4} [\d:.]+ +\d+ \w+\.cc:\d+\] failed call to cuInit"
    rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags"
)


def asked_for_banner() -> bool:
    """Whether the user wants TensorFlow's start-up lines: `CATDOG_DEBUG=1`, or a TF_CPP_MIN_LOG_LEVEL showing info."""
    return os.environ.get(DEBUG_ENV) == "1" or os.environ.get(LEVEL_ENV, "").strip() in ("0", "1")


def is_banner(line: bytes) -> bool:
    return BANNER.match(line) is not None


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


@contextlib.contextmanager
def banner_hidden() -> Iterator[None]:
    """Hold what is written to file descriptor 2 (C++, Python, children alike) until the block ends, then write it
    to stderr without TensorFlow's start-up lines. A file, not a pipe: nothing can block while a library that
    holds Python's lock writes."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as held:
            os.dup2(held.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                held.seek(0)
                _write_all(2, b"".join(line for line in held.read().splitlines(True) if not is_banner(line)))
    finally:
        os.close(saved)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` once, as the next finder would, and imports it (and lists its devices, where `cuInit`
    reports) with the banner hidden."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            with banner_hidden():
                execute(module)
                module.config.list_physical_devices()  # not an op: the thread pools can still be sized after

        spec.loader.exec_module = exec_module
        return spec


def quiet_console() -> None:
    """Hide TensorFlow's start-up banner in this process (idempotent); a no-op when the user asked for it."""
    if asked_for_banner():
        return
    os.environ.setdefault(LEVEL_ENV, QUIET_LEVEL)
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowImport())
