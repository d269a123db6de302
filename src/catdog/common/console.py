"""The console a user reads: no line from TensorFlow or matplotlib that only says they started, unless asked for
(`CATDOG_DEBUG=1`, or `TF_CPP_MIN_LOG_LEVEL` 0 or 1).

TensorFlow 2.21 prints, as it loads, oneDNN's notice (`port.cc`) and "Could not find cuda drivers"
(`cudart_stub.cc`), once per library it loads, before absl's logging is initialised: TF_CPP_MIN_LOG_LEVEL does not
reach them, and TF_ENABLE_ONEDNN_OPTS=0, which would silence one, changes the numbers. At its first device query it
adds `cuInit`'s error where there is no GPU; with oneDNN on, the first graph with a uint8 op (an image batch) logs
"oneDNN supports DT_UINT8 only on platforms with AVX-512" at error level, once per process, though it is no error.
These come from C++ at any time, so file descriptor 2 of the process (C++, Python and child processes alike) goes
through a pipe to a small filter process that writes every other line to the real stderr, as it comes; a line left
open (a progress bar) goes through after `HELD_S`. The filter runs in a session of its own (Ctrl-C reaches the
process, not it) and ends when the last writer closes the pipe, so what a crashing process wrote still comes through;
at exit the process waits for it. TF_CPP_MIN_LOG_LEVEL defaults to 2 (errors only) for what TensorFlow logs later.
matplotlib's "Matplotlib is building the font cache" (logged once per user, as its first import builds the cache) is
dropped at its logger, and the libraries' chatter at their own switches (`LIBRARY_ENV`, MLflow's pip-version
warning). Every entry point calls `quiet_console` first.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import subprocess
import sys

LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
DEBUG_ENV = "CATDOG_DEBUG"
QUIET_LEVEL = "2"  # TensorFlow's own: 0 all, 1 no INFO, 2 no WARNING, 3 no ERROR
# absl's notice before its first pre-initialisation line, the lines TensorFlow 2.21 prints as it starts, and oneDNN's
# data type notice (tensorflow/core/util/util.cc).
HIDDEN = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IWEF]\d{4} [\d:.]+ +\d+ (port|cudart_stub|cpu_feature_guard)\.cc:\d+\] "
    rb"|[IWEF]\d{4} [\d:.]+ +\d+ \w+\.cc:\d+\] failed call to cuInit"
    rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags"
    rb"|[IWEF]\d{4} [\d:.]+ +\d+ util\.cc:\d+\] oneDNN supports \w+ only on platforms with AVX-512"
)
FONT_CACHE = "Matplotlib is building the font cache"
# What libraries print that is no news to the user, each at its own switch: MLflow's INFO lines (a new store's
# tables, uv project detection, input example checks) and its artifact download bars, which every logged model
# shows, and Hugging Face datasets' "TensorFlow version ... available" (cleanlab's Datalab imports it). Defaults:
# a variable the user set wins.
LIBRARY_ENV = {
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "DATASETS_VERBOSITY": "warning",
}
# MLflow warns at every logged model that it cannot find pip's version: uv's environments hold no pip, and only the
# logged model's conda.yaml, which this project does not use to serve, lacks the pin.
PIP_VERSION = "Failed to resolve installed pip version"
HELD_S = 0.1  # how long an unfinished line waits for its end before it is written as it is
EXIT_WAIT_S = 5.0  # at exit, how long the process waits for the filter to write what it still holds
# The filter, run as `python -I -S -c FILTER <pattern>`: no site, no catdog, nothing to import but the standard library.
FILTER = r"""
import os, re, select, sys
hidden, held = re.compile(sys.argv[1].encode("latin-1")), b""
def out(data):
    try:
        while data:
            data = data[os.write(1, data):]
    except OSError:
        pass
while True:
    if held and not select.select([0], [], [], float(sys.argv[2]))[0]:
        out(held)
        held = b""
        continue
    chunk = os.read(0, 1 << 16)
    if not chunk:
        break
    *lines, held = (held + chunk).split(b"\n")
    out(b"".join(line + b"\n" for line in lines if not hidden.match(line)))
    if b"\r" in held:  # a progress bar's finished frames go through as they come
        cut = held.rindex(b"\r") + 1
        out(held[:cut])
        held = held[cut:]
out(held)
"""


def asked_for_banner() -> bool:
    """Whether the user wants TensorFlow's start-up lines: `CATDOG_DEBUG=1`, or a TF_CPP_MIN_LOG_LEVEL showing info."""
    return os.environ.get(DEBUG_ENV) == "1" or os.environ.get(LEVEL_ENV, "").strip() in ("0", "1")


def is_hidden(line: bytes) -> bool:
    return HIDDEN.match(line) is not None


def _not_font_cache(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(FONT_CACHE)


def _not_pip_version(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(PIP_VERSION)


def _quiet_libraries() -> None:
    """The libraries' own switches (read when they log), and MLflow's loggers where it is imported already."""
    for name, value in LIBRARY_ENV.items():
        os.environ.setdefault(name, value)
    if "mlflow" in sys.modules:
        logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"])
    # datasets logs its start-up line as it is imported, before its verbosity setting is read.
    logging.getLogger("datasets").setLevel(os.environ["DATASETS_VERBOSITY"].upper())
    environment = logging.getLogger("mlflow.utils.environment")
    if _not_pip_version not in environment.filters:
        environment.addFilter(_not_pip_version)


def _filter_stderr() -> None:
    """Send file descriptor 2 through the filter process until this process exits."""
    sys.stderr.flush()
    real = os.dup(2)
    read, write = os.pipe()
    argv = [sys.executable, "-I", "-S", "-c", FILTER, HIDDEN.pattern.decode("latin-1"), str(HELD_S)]
    try:
        filtering = subprocess.Popen(argv, stdin=read, stdout=real, stderr=real, start_new_session=True)
    except OSError:  # no filter: the console shows everything, as asked for with CATDOG_DEBUG=1
        os.close(write)
        os.close(real)
        return
    finally:
        os.close(read)
    os.dup2(write, 2)
    os.close(write)
    owner = os.getpid()

    def restore() -> None:
        if os.getpid() != owner:  # a forked child exits: the pipe stays the parent's
            return
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(real, 2)  # the pipe's last end here closes: the filter writes what it holds and ends
        os.close(real)
        # A child process that still holds the pipe keeps the filter going after this process ends.
        with contextlib.suppress(subprocess.TimeoutExpired):
            filtering.wait(EXIT_WAIT_S)

    atexit.register(restore)


_FILTERED: list[int] = []


def quiet_console() -> None:
    """Hide TensorFlow's start-up lines, oneDNN's data type notice and matplotlib's font-cache line in this process
    and in the processes it starts with its stderr (idempotent); a no-op when the user asked for them. The stderr
    filter starts only before TensorFlow is imported, and where `sys.stderr` is still Python's own (not under pytest's
    capture, say)."""
    if asked_for_banner():
        return
    os.environ.setdefault(LEVEL_ENV, QUIET_LEVEL)
    _quiet_libraries()
    fonts = logging.getLogger("matplotlib.font_manager")
    if _not_font_cache not in fonts.filters:
        fonts.addFilter(_not_font_cache)
    if "tensorflow" in sys.modules or sys.stderr is not sys.__stderr__ or _FILTERED:
        return
    _FILTERED.append(os.getpid())  # a forked child inherits the flag, and its file descriptor 2 is the pipe
    _filter_stderr()
