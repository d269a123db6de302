"""The console a user reads: TensorFlow's C++ start-up banner, oneDNN's data type notice and matplotlib's font-cache
line hidden in every entry point, unless asked for, and nothing else hidden: not a line a child process writes, not a
line left open, not what a killed process wrote last."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from catdog.common import console

# What TensorFlow 2.21 printed on stderr here (no GPU) as it loaded and listed its devices, at TF_CPP_MIN_LOG_LEVEL 0.
BANNER = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1796171271.303869    8976 port.cc:153] oneDNN custom operations are on. You may see slightly "
    b"different numerical results due to floating-point round-off errors from different computation orders. To turn "
    b"them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.\n",
    b"I0000 00:00:1796171271.304210    8976 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    b"not be used.\n",
    b"I0000 00:00:1796171271.355324    8976 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    b"available CPU instructions in performance-critical operations.\n",
    b"To enable the following instructions: AVX2 AVX512F AVX512_VNNI FMA, in other operations, rebuild TensorFlow "
    b"with the appropriate compiler flags.\n",
    b"E0000 00:00:1796171279.012102    8976 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    b"call to cuInit: UNKNOWN ERROR (303)\n",
    # What TensorFlow 2.21 printed here with TF_ENABLE_ONEDNN_OPTS=1 at its first graph with a uint8 op, and on
    # AVX-512 Xeons in every training stage, with oneDNN on by default there.
    b"E0000 00:00:1796534035.730506   14552 util.cc:131] oneDNN supports DT_UINT8 only on platforms with AVX-512. "
    b"Falling back to the default Eigen-based implementation if present.\n",
]
NOT_BANNER = [
    b"Epoch 1/20\n",
    b"E0000 00:00:1796171279.012102    8976 op_kernel.cc:1857] OP_REQUIRES failed at conv_ops.cc: out of memory\n",
    b"E0000 00:00:1796534035.730506   14552 util.cc:99] any other line of util.cc\n",
    b"I0000 00:00:1796171271.303869    8976 transport.cc:153] something else\n",
    b"config error: trainer.epochs: got 0; expected an integer >= 1\n",
]
# A graph with a uint8 op, as an image batch is: with oneDNN on, TensorFlow then says which types oneDNN takes.
UINT8_GRAPH = (
    "from catdog.common.console import quiet_console; quiet_console(); import sys; import tensorflow as tf; "
    "f = tf.function(lambda x: tf.transpose(x, [0, 3, 1, 2])); print(f(tf.zeros([1, 4, 4, 3], tf.uint8)).shape[1]); "
    "print('our own line', file=sys.stderr)"
)


def test_the_hidden_lines_are_recognised_and_nothing_else() -> None:
    assert all(console.is_hidden(line) for line in BANNER)
    assert not any(console.is_hidden(line) for line in NOT_BANNER)


WRITES = """
import os, subprocess, sys
from catdog.common.console import quiet_console
quiet_console()
os.write(2, BANNER[0] + BANNER[1] + BANNER[2] + b"Epoch 1/20\\n")
print("from Python", file=sys.stderr)
subprocess.run([sys.executable, "-c", "import os; os.write(2, b'from a child\\\\n' + %r)" % BANNER[-1]], check=True)
os.write(2, BULK)
os.write(2, BANNER[-1] + b"no newline at the end")
"""
# The filter is still writing these when the process exits.
BULK_CODE = 'BULK = b"".join(b"line %d of a long traceback\\n" % i for i in range(20_000))'
BULK = b"".join(b"line %d of a long traceback\n" % i for i in range(20_000))


@pytest.mark.parametrize("debug", [False, True])
def test_stderr_comes_through_in_order_without_the_hidden_lines(tmp_path: Path, debug: bool) -> None:
    """In a process of its own, its stderr a file read as soon as it exits: the process waits for the filter."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "CATDOG_DEBUG")}
    code = f"BANNER = {BANNER!r}\n{BULK_CODE}\n{WRITES}"
    with open(tmp_path / "stderr", "wb") as stderr:
        subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**env, "CATDOG_DEBUG": "1" if debug else "0"},
                       stderr=stderr, check=True, timeout=60)  # fmt: skip
    written = (tmp_path / "stderr").read_bytes()
    if debug:
        assert written == b"".join([*BANNER[:3], b"Epoch 1/20\nfrom Python\nfrom a child\n", BANNER[-1], BULK,
                                    BANNER[-1], b"no newline at the end"])  # fmt: skip
    else:
        assert written == b"Epoch 1/20\nfrom Python\nfrom a child\n" + BULK + b"no newline at the end"


def test_what_a_killed_process_wrote_last_comes_through() -> None:
    code = (
        "import os, signal, sys; from catdog.common.console import quiet_console; quiet_console(); "
        "print('before the kill', file=sys.stderr); os.kill(os.getpid(), signal.SIGKILL)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (-signal.SIGKILL, "before the kill\n")


# matplotlib logs the line when building its font cache takes over 5 s (threading.Timer(5, ...) in FontManager):
# here the timer fires at once, so the real line comes from a real, fresh build.
FONT_CACHE = """
import logging, threading, sys
from catdog.common.console import quiet_console
quiet_console()
timer = threading.Timer
threading.Timer = lambda interval, function: timer(0, function)
import matplotlib.font_manager
logging.getLogger("matplotlib.font_manager").warning("another warning")
"""


@pytest.mark.parametrize("debug", [False, True])
def test_matplotlib_builds_its_font_cache_without_saying_so(tmp_path: Path, debug: bool) -> None:
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "fresh"), "CATDOG_DEBUG": "1" if debug else "0"}
    done = subprocess.run([sys.executable, "-c", FONT_CACHE], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    assert list((tmp_path / "fresh").glob("fontlist-*.json")), "no font cache was built"
    assert ("Matplotlib is building the font cache; this may take a moment." in done.stderr) is debug, done.stderr
    assert "another warning" in done.stderr


# A new MLflow store logs its tables' creation at INFO; a logged model, MLflow's pip-version warning (uv's
# environments hold no pip) and a download bar; Hugging Face datasets' start-up line, at INFO.
LIBRARIES = """
import logging, sys
from catdog.common.console import quiet_console
quiet_console()
logging.basicConfig(level=logging.INFO)  # as Hydra's job logging does
import mlflow
mlflow.MlflowClient(f"sqlite:///{sys.argv[1]}/mlflow.db").search_experiments()
logging.getLogger("mlflow.utils.environment").warning("Failed to resolve installed pip version. pip is added")
logging.getLogger("mlflow.utils.environment").warning("another warning")
from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR
print("bars", MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.get(), file=sys.stderr)
import datasets
"""


@pytest.mark.slow
@pytest.mark.parametrize("debug", [False, True])
def test_mlflow_and_datasets_keep_their_news_to_themselves(tmp_path: Path, debug: bool) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATASETS_"))}
    env["CATDOG_DEBUG"] = "1" if debug else "0"
    argv = [sys.executable, "-c", LIBRARIES, str(tmp_path)]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=True)
    assert ("Creating initial MLflow database tables" in done.stderr) is debug, done.stderr
    assert ("Failed to resolve installed pip version" in done.stderr) is debug
    assert ("TensorFlow version" in done.stderr and "available" in done.stderr) is debug
    assert f"bars {debug}" in done.stderr and "another warning" in done.stderr


@pytest.mark.parametrize(
    ("env", "asked"),
    [
        ({}, False),
        ({"TF_CPP_MIN_LOG_LEVEL": "3"}, False),
        ({"TF_CPP_MIN_LOG_LEVEL": "0"}, True),
        ({"CATDOG_DEBUG": "1"}, True),
    ],
)
def test_the_user_can_ask_for_the_banner(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], asked: bool) -> None:
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.delenv("CATDOG_DEBUG", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert console.asked_for_banner() is asked


def test_every_entry_point_quiets_the_console() -> None:
    """The Hydra entry points through their wrapper (which also runs in a sweep's worker), the others directly."""
    for script in sorted((REPO / "src").glob("*.py")):
        text = script.read_text(encoding="utf-8")
        assert "@hydra_entry" in text or "quiet_console()" in text, f"{script.name} does not call quiet_console"


# An exit handler registered before the entry point's wrapper runs after the wrapper's: it sees what the
# interpreter's final garbage collections will see.
FROZEN_AT_EXIT = (
    "import atexit, gc; atexit.register(lambda: print('frozen at exit', gc.get_freeze_count() > 0)); "
    "from catdog.settings.hydra_app import hydra_entry; hydra_entry(lambda cfg: None); "
    "print('frozen before exit', gc.get_freeze_count() > 0)"
)


def test_an_entry_point_leaves_its_objects_out_of_the_final_collections() -> None:
    """The interpreter's last garbage collections skip what the process built (2 s of TensorFlow and Keras objects)."""
    done = subprocess.run([sys.executable, "-c", FROZEN_AT_EXIT], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (0, "frozen before exit False\nfrozen at exit True\n"), done.stderr


def tensorflow_stderr(code: str, stdout: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "CATDOG_DEBUG")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    assert done.stdout == stdout
    return done.stderr


@pytest.mark.slow
def test_tensorflow_starts_without_its_banner_or_onednn_s_data_type_notice_unless_asked() -> None:
    """oneDNN forced on (on by default on AVX-512 Xeons): TensorFlow's start-up lines, and the notice the first graph
    with a uint8 op logs at error level where the CPU prints it, are hidden; not what follows them."""
    assert tensorflow_stderr(UINT8_GRAPH, "3\n", TF_ENABLE_ONEDNN_OPTS="1") == "our own line\n"
    shown = tensorflow_stderr(UINT8_GRAPH, "3\n", CATDOG_DEBUG="1", TF_ENABLE_ONEDNN_OPTS="1")
    # Which lines TensorFlow prints depends on the machine (cuInit's error where a CUDA toolkit is installed, the data
    # type notice on some CPUs): asked for, they are there; only the quiet run hides them.
    banner = [line for line in shown.splitlines() if console.is_hidden(line.encode())]
    assert any("port.cc" in line and "oneDNN custom operations are on" in line for line in banner), shown
    assert shown.endswith("our own line\n"), shown
