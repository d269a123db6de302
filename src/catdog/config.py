"""Config checks, project paths and the wrapper of the Hydra entry points, shared by every entry point."""

from __future__ import annotations

import functools
import itertools
import numbers
import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from catdog.errors import UserError, reports_user_errors

PREPROCESS_OPTIONS = ("none", "mobilenet_v2")
LR_SCHEDULES = ("constant", "cosine")
OUTPUTS = ("adhoc", "study")
PRECISIONS = ("float32", "bfloat16", "auto")
MIN_IMAGE_SIZE = 32
EXPERIMENT_TEMP_DIR = (".dvc", "tmp", "exps")
URI_ENV = "MLFLOW_TRACKING_URI"
SQLITE_FILE = "mlflow.db"
# `dvc exp run` names its experiment in this variable.
DVC_EXPERIMENT_ENV = "DVC_EXP_NAME"


class ConfigError(UserError, ValueError):
    """A config value is out of its allowed range; the message names the key and what is allowed."""

    kind = "config error"
    exit_code = 2


class StoreError(UserError, RuntimeError):
    """The tracking store cannot be used: the message names its URI, what it answered and what to do."""

    kind = "tracking error"


class DataMissing(UserError):
    """Data a command reads is not there yet: the message names the file or folder and the command that makes it."""

    kind = "data error"


GET_DATA = "`dvc repro split` (or `python src/download.py && python src/split.py`)"


def require_data(data: DictConfig, splits: Sequence[str]) -> None:
    """Refuse, before TensorFlow is imported, a run whose data set or split manifests (`<split_dir>/<name>.csv`,
    as `catdog.dataset` reads them) are not there: a fresh checkout has neither until `dvc repro split`."""
    needed = [(Path(data.dataset_dir), "the data set is not downloaded")]
    needed += [(Path(data.split_dir) / f"{name}.csv", f"no {name} manifest: the data is not split") for name in splits]
    for path, what in needed:
        if not path.exists():
            raise DataMissing(f"{path.absolute()} not found ({what}); fetch and split the data with {GET_DATA}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _distinct(values: Any, ok: Callable[[Any], bool]) -> bool:
    items = list(values) if isinstance(values, (list, tuple, ListConfig)) else None
    return bool(items) and len(set(map(str, items))) == len(items) and all(map(ok, items))


CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "study.seeds": (
        lambda v: _distinct(v, lambda s: _is_int(s) and s >= 0),
        "a non-empty list of distinct integers >= 0",
    ),
    "study.variants": (
        lambda v: _distinct(v, lambda s: isinstance(s, str) and s != ""),
        "a non-empty list of distinct names",
    ),
    "data.split_seed": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "data.test_fraction": (lambda v: _is_number(v) and 0 < v < 1, "a number strictly between 0 and 1"),
    "data.min_holdout_per_class": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "data.max_pixels": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "data.sha256": (
        lambda v: v is None or (isinstance(v, str) and re.fullmatch(r"[0-9a-fA-F]{64}", v) is not None),
        "64 hex digits, or null (no check)",
    ),
    "trainer.epochs": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "trainer.batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "trainer.image_size": (lambda v: _is_int(v) and v >= MIN_IMAGE_SIZE, f"an integer >= {MIN_IMAGE_SIZE}"),
    "trainer.early_stopping.patience": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "optimizer.learning_rate": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "trainer.lr_schedule": (lambda v: v in LR_SCHEDULES, f"one of {', '.join(LR_SCHEDULES)}"),
    "trainer.steps_per_execution": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "trainer.ema_momentum": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1); 0 turns averaging off"),
    "model.preprocess": (lambda v: v in PREPROCESS_OPTIONS, f"one of {', '.join(PREPROCESS_OPTIONS)}"),
    "trainer.outputs": (lambda v: v in OUTPUTS, f"one of {', '.join(OUTPUTS)}"),
    "trainer.threads": (lambda v: v == "auto" or (_is_int(v) and v >= 1), "auto, or an integer >= 1"),
    "trainer.precision": (lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
}


def _lookup(cfg: DictConfig, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def validate(cfg: DictConfig) -> None:
    """Refuse out-of-range values before any data is read or any run is opened."""
    problems = []
    for key, (ok, allowed) in CHECKS.items():
        value = _lookup(cfg, key)
        if not ok(value):
            problems.append(f"{key}: got {value!r}; expected {allowed}")
    if cfg.model.get("cache_features") and cfg.augment.enabled:
        problems.append("model.cache_features: got true with augment=on; cached features need augment=off")
    if problems:
        raise ConfigError("\n".join(problems))


def project_root(start: Path | None = None) -> Path:
    """The repository holding dvc.yaml; from inside a DVC temporary experiment, the repository that launched it."""
    here = (start or Path.cwd()).resolve()
    root = next((p for p in (here, *here.parents) if (p / "dvc.yaml").is_file()), here)
    parts = root.parts
    for i in range(len(parts) - len(EXPERIMENT_TEMP_DIR)):
        if parts[i : i + len(EXPERIMENT_TEMP_DIR)] == EXPERIMENT_TEMP_DIR:
            return Path(*parts[:i])
    return root


class RefusedRunCleanup(Callback):
    """Hydra makes a run's folder (outputs/<date>/<time>-<name>/, with .hydra/ and the log), or a sweep's
    (multirun/<date>/<time>/), before the entry point runs: note the folders this command is about to create, so
    that a refused command can remove them again (`remove_refused_run`). conf/config.yaml installs it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _note_created(str(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _note_created(str(config.hydra.sweep.dir))


_CREATED: list[Path] = []  # the run (or sweep) folder this process's Hydra creates, then the parents it creates


def _note_created(folder: str) -> None:
    made = Path(os.path.abspath(folder))
    _CREATED[:] = list(itertools.takewhile(lambda p: not p.exists(), (made, *made.parents)))


def _holds_only(folder: Path, names: set[str]) -> bool:
    return folder.is_dir() and all(p.name in names for p in folder.iterdir())


def remove_refused_run() -> None:
    """Remove the run folder Hydra created for this very command (in a sweep: the job's, then the sweep's once it
    holds nothing but Hydra's multirun.yaml), and the parents it created that are now empty; never a folder that
    existed before the command started, nor one that holds more than Hydra's own files."""
    if not _CREATED or not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    made, *parents = _CREATED
    job_dir = Path(hydra.runtime.output_dir)
    if made not in (job_dir, job_dir.parent) or not _holds_only(
        job_dir, {hydra.output_subdir, f"{hydra.job.name}.log"}
    ):
        return
    shutil.rmtree(job_dir, ignore_errors=True)
    if made != job_dir:  # a sweep's job: the sweep's folder goes only once no other job left anything in it
        if not _holds_only(made, {"multirun.yaml"}):
            return
        shutil.rmtree(made, ignore_errors=True)
    for folder in parents:
        try:
            folder.rmdir()
        except OSError:  # another run's folder is in it
            break


def hydra_entry(main: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """The wrapper of every Hydra entry point: `catdog.errors.reports_user_errors` (a user's mistake in one line,
    `HYDRA_FULL_ERROR=1` shows its traceback), with OmegaConf's mistakes (a missing key, a bad interpolation)
    reported as config errors, and the run folder Hydra made for a refused command removed."""

    @functools.wraps(main)
    def task(cfg: DictConfig) -> Any:
        try:
            return main(cfg)
        except OmegaConfBaseException as exc:
            # OmegaConf adds the key and object type on lines of their own; its first line names the problem.
            raise ConfigError((str(exc).splitlines() or [type(exc).__name__])[0]) from exc

    return reports_user_errors(task, on_refusal=remove_refused_run)


def swept_keys(argv: list[str]) -> list[str]:
    """The keys a command line sweeps over (`optimizer.learning_rate=1e-3,3e-4` → optimizer.learning_rate)."""
    parsed = OverridesParser.create().parse_overrides([a for a in argv if not a.startswith("-")])
    return [o.key_or_group for o in parsed if o.is_sweep_override()]


def sweep_command_line(sweep_dir: Path) -> list[str]:
    """The overrides the sweep was launched with, as Hydra saved them in the sweep folder's multirun.yaml before
    any job started: the one record every launcher's jobs can read (a joblib worker or a Slurm node has its own
    command line)."""
    saved = sweep_dir / "multirun.yaml"
    return list(OmegaConf.load(saved).hydra.overrides.task) if saved.is_file() else []


def name_sweep_job(cfg: DictConfig) -> None:
    """In a `--multirun` sweep, suffix the run's name with this job's values of the swept keys, so no two jobs
    share outputs, checkpoints or an MLflow run name (`cnn-augment_off-optimizer.learning_rate=0.001`); with the
    job's number where the sweep's command line cannot be read."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    hydra = HydraConfig.get()
    job = dict(o.split("=", 1) for o in hydra.overrides.task if "=" in o)
    try:
        swept = [k for k in swept_keys(sweep_command_line(Path(hydra.sweep.dir))) if k in job and k != "name"]
    except OverrideParseException:
        swept = []
    suffix = ",".join(f"{k}={job[k]}" for k in swept) or f"job{hydra.job.num}"
    cfg.name = f"{cfg.name}-{suffix}"


def tracking_uri(configured: str) -> str:
    """$MLFLOW_TRACKING_URI, else the configured URI, else an SQLite file at the repository root (absolute)."""
    uri = os.environ.get(URI_ENV) or configured
    if uri:
        return uri
    return f"sqlite:///{project_root() / SQLITE_FILE}"
