"""The console a user reads: TensorFlow's C++ start-up banner hidden in every entry point, unless asked for, and
nothing else hidden."""

from __future__ import annotations

import os
import subprocess
import sys

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
]
NOT_BANNER = [
    b"Epoch 1/20\n",
    b"E0000 00:00:1796171279.012102    8976 op_kernel.cc:1857] OP_REQUIRES failed at conv_ops.cc: out of memory\n",
    b"I0000 00:00:1796171271.303869    8976 transport.cc:153] something else\n",
    b"config error: trainer.epochs: got 0; expected an integer >= 1\n",
]
TENSORFLOW_STARTS = (
    "from catdog.common.console import quiet_console; quiet_console(); import sys; import tensorflow as tf; "
    "print(float(tf.reduce_sum(tf.constant([1.0, 2.0])))); print('our own line', file=sys.stderr)"
)


def test_the_banner_lines_are_recognised_and_nothing_else() -> None:
    assert all(console.is_banner(line) for line in BANNER)
    assert not any(console.is_banner(line) for line in NOT_BANNER)


HIDDEN_WRITES = """
import os, sys
from catdog.common.console import banner_hidden
with banner_hidden():
    os.write(2, BANNER[0] + BANNER[1] + BANNER[2] + b"Epoch 1/20\\n")
    print("from Python", file=sys.stderr)
    os.write(2, BANNER[-1] + b"no newline at the end")
"""


def test_stderr_written_while_hidden_comes_through_in_order_without_the_banner() -> None:
    """In a process of its own: there Python's sys.stderr writes to file descriptor 2, as in an entry point."""
    code = f"BANNER = {BANNER!r}\n{HIDDEN_WRITES}"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stderr == "Epoch 1/20\nfrom Python\nno newline at the end"


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


def tensorflow_stderr(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "CATDOG_DEBUG")}
    done = subprocess.run(
        [sys.executable, "-c", TENSORFLOW_STARTS],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    assert done.stdout == "3.0\n"
    return done.stderr


@pytest.mark.slow
def test_tensorflow_starts_without_its_banner_unless_asked() -> None:
    quiet = tensorflow_stderr()
    assert quiet == "our own line\n", quiet
    shown = tensorflow_stderr(CATDOG_DEBUG="1")
    # Which lines TensorFlow prints depends on the machine (oneDNN's port.cc notice only where TensorFlow turns oneDNN
    # on, cuInit's error where a CUDA toolkit is installed): asked for, they are there; only the quiet run hides them.
    banner = [line for line in shown.splitlines() if console.is_banner(line.encode())]
    assert banner and any(".cc:" in line for line in banner) and shown.endswith("our own line\n"), shown
