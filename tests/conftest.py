"""Shared fixtures: tiny generated image sets, composed configs on temporary paths, an isolated MLflow store (a copy
of one store migrated once per worker), the `requires(...)` marker for tests of real engines, and a check at the end
of the session that nothing the suite started is still running."""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig
from PIL import Image

from catdog.common.machine import ONEDNN_ENV, available_cores, cpu_flags, onednn_state
from catdog.settings.params import compose_config
from catdog.settings.project import PROJECT_ENV

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
# Tests run in temporary folders: where no params.yaml is above the working directory, this checkout is the project
# (a copied project, as the pipeline tests make, is found from its own folder first).
os.environ.setdefault(PROJECT_ENV, str(REPO))
# Every training process of the suite runs TensorFlow's default kernels for this CPU, as runs in the suite's own process
# do: trainer.onednn=auto would first time each tiny workload in child processes (tests/test_onednn.py tests it).
os.environ.setdefault(ONEDNN_ENV, "1" if onednn_state(cpu_flags(), {})["on"] else "0")
KERAS_WEIGHTS_NAME = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{size}_no_top.h5"
TINY_SIZE = 32
# The study's transfer size: Keras keeps one ImageNet checkpoint per input size, and .ci/run seeds this one only.
WEIGHTS_SIZE = 224
CLASS_COLOURS = {"cats": (200, 60, 40), "dogs": (40, 80, 210)}
TINY_COUNTS = {"train": 12, "validation": 8}


def jpeg_bytes(colour: tuple[int, int, int], seed: int, size: tuple[int, int] = (40, 30)) -> bytes:
    """A small JPEG of one colour plus noise, different bytes for each seed."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_dataset(root: Path, counts: dict[str, int] = TINY_COUNTS) -> Path:
    """`root/cats_and_dogs_filtered/{train,validation}/{cats,dogs}/` with `counts[folder]` JPEGs per class."""
    dataset = root / "cats_and_dogs_filtered"
    seed = 0
    for folder, n in counts.items():
        for cls, colour in CLASS_COLOURS.items():
            target = dataset / folder / cls
            target.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                seed += 1
                (target / f"{cls[:-1]}.{folder}{i}.jpg").write_bytes(jpeg_bytes(colour, seed))
    return dataset


def zip_folder(folder: Path, archive: Path, extra: dict[str, bytes] | None = None) -> Path:
    """Zip `folder` (its name as the top entry), plus raw `extra` entries."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder.parent).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return archive


def run_entry(script: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the entry point `src/<script>` with Hydra overrides `args`, from `cwd`."""
    return subprocess.run(
        [sys.executable, str(REPO / "src" / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def without_tensorflow(env: Mapping[str, str], folder: Path, why: str) -> dict[str, str]:
    """`env` with a `tensorflow` package under `folder` first on the path whose import fails with `why`: a command
    that passes in it never imported TensorFlow."""
    fake = folder / "shadow" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(f"raise ImportError({why!r})\n")
    return {**env, "PYTHONPATH": str(fake.parent)}


def expected_overrides(counts: dict[str, int] = TINY_COUNTS) -> list[str]:
    return [f"data.expected.{folder}.{cls}={n}" for folder, n in counts.items() for cls in CLASS_COLOURS] + [
        "data.min_holdout_per_class=2"
    ]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh current folder, so relative output paths of the config land in it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def bare_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with the repository's settings and no study yet, the working folder outside it."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "params.yaml", project / "params.yaml")
    shutil.copytree(REPO / "conf", project / "conf")
    monkeypatch.setenv(PROJECT_ENV, str(project))
    monkeypatch.chdir(tmp_path)
    return project


@contextlib.contextmanager
def session_shared(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """`name` in the temporary folder every xdist worker of this session shares, held under a lock of its own: the
    first worker to ask makes it, the others wait and reuse it. (From xdist's variable, not its `worker_id` fixture:
    a session without xdist, `-p no:xdist`, has no such fixture.)"""
    shared = tmp_path_factory.getbasetemp()
    shared = shared.parent if os.environ.get("PYTEST_XDIST_WORKER") else shared
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield shared / name


@pytest.fixture(scope="session")
def built_study(tmp_path_factory: pytest.TempPathFactory):
    """The tiny study (tests/tiny_study.py), built once per session (`session_shared`)."""
    from tiny_study import build

    with session_shared(tmp_path_factory, "tiny-study") as root:
        return build(root)


@pytest.fixture
def tiny_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    return zip_folder(make_dataset(root), root / "cats_and_dogs_filtered.zip")


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite tracking store with MLflow's schema, migrated once per session (`session_shared`: MLflow's
    migrations take 3-4 s of CPU, once instead of once per worker); each test copies it."""
    import mlflow  # here, not at the top: xdist's controller loads this file and never needs MLflow (1.6 s)

    with session_shared(tmp_path_factory, "migrated-store") as folder:
        path = folder / "mlflow.db"
        if not path.exists():
            folder.mkdir(exist_ok=True)
            partial = folder / "partial.db"
            mlflow.MlflowClient(f"sqlite:///{partial}").search_experiments()  # creates and migrates it
            partial.rename(path)
        return path


@pytest.fixture(autouse=True)
def isolated_mlflow(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, migrated_store: Path
) -> Iterator[str]:
    """Every test gets its own SQLite store (a file copy of the migrated one, beside its tmp_path rather than in
    it); no run is left active afterwards."""
    import mlflow

    store = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    shutil.copyfile(migrated_store, store)
    uri = f"sqlite:///{store}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # mlflow.set_experiment exports the experiment's id; this test's store starts without it (restored after).
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    # The fluent API remembers the last experiment set; the next test's store does not have it.
    mlflow.tracking.fluent._active_experiment_id = None


@pytest.fixture
def split_data(workdir: Path) -> Path:
    """A tiny data set, downloaded-layout, split into manifests under the working folder (with the study's split
    settings, which training checks against its config)."""
    split_tiny(make_dataset(workdir / "data" / "raw"), workdir / "data" / "split")
    return workdir


def split_tiny(dataset: Path, split_dir: Path) -> None:
    """Split a tiny data set into manifests with the study's split settings (as `dvc repro split` would)."""
    from catdog.data.split import make_split

    data = compose_config(CONF).data
    make_split(
        dataset,
        split_dir,
        ["cats", "dogs"],
        "train",
        "validation",
        data.test_fraction,
        seed=data.split_seed,
        min_holdout_per_class=2,
    )


def tiny_overrides(variant: str, outputs: str = "study") -> list[str]:
    """Overrides that shrink a variant to seconds: tiny images, one epoch, random backbone weights, the study's
    first seed only (a test that wants more sets `study.seeds` after these); `outputs` study writes where the study's
    train stage does (models/<name>/, metrics/, plots/)."""
    base = [
        f"variant={variant}",
        "study.seeds=[42]",
        f"trainer.image_size={TINY_SIZE}",
        "trainer.epochs=1",
        "trainer.batch_size=8",
        f"trainer.outputs={outputs}",
        *expected_overrides(),
    ]
    return base + (["model.net.weights=null"] if variant == "transfer" else [])


def tiny_config(variant: str, *overrides: str) -> DictConfig:
    """A variant's config shrunk to seconds (`tiny_overrides`), plus `overrides`."""
    return compose_config(CONF, tiny_overrides(variant) + list(overrides))


def all_runs() -> list:
    """Every run of every experiment in the current tracking store."""
    import mlflow

    client = mlflow.MlflowClient()
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def _missing_engine(name: str) -> str | None:
    """Why the real engine `name` cannot run here, or None."""
    if name == "postgres":
        from catdog.team.postgres import bin_dir

        probe = bin_dir
    elif name == "swift":
        from catdog.team.swift import programs

        probe = programs
    elif name == "slurm":
        import slurm_cluster

        return slurm_cluster.missing()
    elif name == "chromium":
        from headless import find_browser

        return None if find_browser() else "no Chromium (chromium, chromium-browser, google-chrome) to open pages"
    elif name == "imagenet":
        home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
        weights = home / "models" / KERAS_WEIGHTS_NAME.format(size=WEIGHTS_SIZE)
        return None if weights.is_file() else f"ImageNet weights not in Keras' cache ({weights})"
    else:
        raise ValueError(f"requires({name!r}): no such engine")
    try:
        probe()
    except FileNotFoundError as exc:
        return str(exc)
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "requires(*engines): the test starts real engines (postgres, swift, slurm, chromium, imagenet); it skips where "
        "one is missing, and fails instead under CATDOG_REQUIRE_ENGINES=1 (.ci/run sets it once it installed them)",
    )
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist): mark what this session starts
        os.environ[SESSION_MARK] = f"{os.getpid()}-{time.time_ns()}"


def fast_tier(config: pytest.Config) -> bool:
    """Whether this session is the fast tier (`-m "not slow"`)."""
    return "not slow" in (config.option.markexpr or "")


@pytest.hookimpl(optionalhook=True)  # xdist's hook: a session without xdist (-p no:xdist) has no such hook
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (pyproject.toml's addopts): for the full suite, one worker more than the cores this process may use
    (catdog.common.machine.available_cores: a Slurm allocation, else the CPU affinity).
    On two workers a quarter of the cores' time went unused (147% CPU of 200% in the fresh-clone run of 36bc95d:
    servers starting, polls, a worker blocked on the tiny study's lock); the extra worker runs tests in those waits
    (14:40 → 11:20 and 13:12 in two runs). The fast tier (-m "not slow") waits on nothing: one worker per core (a
    third one costs its own TensorFlow import and collection, 66 → 88 s)."""
    cores = available_cores()
    return cores if fast_tier(config) else cores + 1


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """The fast tier has no test groups: there idle workers take tests queued for the others (xdist's `worksteal`),
    so neither waits at the end for a last long test of the other's (`--dist loadgroup`'s chunks ended the two
    workers 4 s apart in a run of 46-50 s). The full suite keeps `loadgroup` (pyproject.toml's addopts)."""
    if fast_tier(config):
        from xdist.scheduler import WorkStealingScheduling

        return WorkStealingScheduling(config, log)
    return None


# The groups that each hold one worker longest go first, so the other worker takes the rest beside them; "clone"
# waits for the tiny study "pipeline" builds, which "team" gives it time to.
FIRST_GROUPS = ("pipeline", "team", "clone")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The groups first (above), then the other slow tests, then the fast ones: xdist hands each worker its tests in
    chunks, and a chunk of slow tests handed out last kept one worker busy 41 s after the other two had finished
    (fresh-clone run of 7f54e7a); short tests at the end leave the workers little to wait on."""

    def rank(item: pytest.Item) -> tuple[int, int]:
        groups = [m.args[0] for m in item.iter_markers("xdist_group") if m.args]
        group = next((FIRST_GROUPS.index(g) for g in groups if g in FIRST_GROUPS), len(FIRST_GROUPS))
        return group, 0 if item.get_closest_marker("slow") else 1

    items.sort(key=rank)  # stable: collection order within each rank


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("requires"):
        missing = [why for name in marker.args if (why := _missing_engine(name))]
        if missing:
            why = "; ".join(missing) + "; .ci/run installs Debian's packages for them (and seeds Keras' cache)"
            if os.environ.get("CATDOG_REQUIRE_ENGINES") == "1":
                pytest.fail(f"a required engine is missing: {why}", pytrace=False)
            pytest.skip(why)


SESSION_MARK = "CATDOG_TEST_SESSION"


def _left_running() -> list[str]:
    """Processes this test session started (they carry its mark in their environment) that still run."""
    from processes import carrying

    mark = f"{SESSION_MARK}={os.environ.get(SESSION_MARK)}"
    return [f"{pid} {b' '.join(argv).decode(errors='replace')[:200]}" for pid, argv in carrying(mark)]


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int):
    """Fail the session if a process it started (a server, a job step, a training) outlived it; stop those. After
    every other finish hook, so xdist's workers are gone."""
    result = yield
    if not hasattr(session.config, "workerinput") and os.environ.get(SESSION_MARK):
        _stop_leftovers(session)
    return result


def _stop_leftovers(session: pytest.Session) -> None:
    deadline = time.monotonic() + 10
    while (left := _left_running()) and time.monotonic() < deadline:
        time.sleep(0.5)
    if not left:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = ["processes the test session started are still running (a fixture did not stop them):", *left]
    if reporter:
        reporter.write_line("\n".join(lines), red=True)
    for line in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(line.split()[0]), signal.SIGKILL)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
