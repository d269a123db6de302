"""Config checks and project paths shared by every entry point."""

from __future__ import annotations

import functools
import numbers
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

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


class ConfigError(ValueError):
    """A config value is out of its allowed range; the message names the key and what is allowed."""


class StoreError(RuntimeError):
    """The tracking store cannot be used: the message names its URI, what it answered and what to do."""


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


def reports_config_errors(main: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Wrap an entry point so a config mistake prints one line per problem and exits 2, and a tracking store that
    cannot be used (absent, refusing these credentials) one line and exits 1, with no traceback
    (`HYDRA_FULL_ERROR=1` shows it)."""

    @functools.wraps(main)
    def wrapper(cfg: DictConfig) -> Any:
        try:
            return main(cfg)
        except (ConfigError, OmegaConfBaseException) as exc:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            # OmegaConf adds the key and object type on lines of their own; its first line names the problem.
            lines = str(exc).splitlines() if isinstance(exc, ConfigError) else str(exc).splitlines()[:1]
            for line in lines:
                print(f"config error: {line}", file=sys.stderr)
            sys.exit(2)
        except StoreError as exc:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"tracking error: {exc}", file=sys.stderr)
            sys.exit(1)

    return wrapper


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
