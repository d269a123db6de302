"""The wrapper of the Hydra entry points: one error path, no folder left behind by a refused command, and the
names of a sweep's jobs."""

from __future__ import annotations

import atexit
import functools
import gc
import itertools
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from catdog.common.console import quiet_console
from catdog.common.errors import reports_user_errors
from catdog.common.processes import die_with_parent
from catdog.settings.checks import ConfigError

RUN_FOLDER = "run_folder"


def run_folder(job: str, name: str) -> str:
    """The end of a run's folder name, conf/config.yaml's `${run_folder:${hydra.job.name},${name}}`: a training run's
    name (outputs/<date>/<time>-baseline); any other entry point's own name (outputs/<date>/<time>-download), since
    only training reads `name`. Registered when an entry point imports this module, before Hydra composes."""
    return name if job == "train" else job


if not OmegaConf.has_resolver(RUN_FOLDER):
    OmegaConf.register_new_resolver(RUN_FOLDER, run_folder)


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


def freeze_at_exit() -> None:
    """At exit, after every exit handler registered later (MLflow's, TensorFlow's; they still run), move everything
    the process holds into the garbage collector's permanent generation (`gc.freeze`), so that the interpreter's final
    collections skip it: walking TensorFlow's and Keras' object graphs was 2.0-2.4 s of each stage's exit, frozen
    0.1-0.2 s. Objects are still released as their references go; the memory goes back with the process."""
    atexit.register(gc.freeze)


def hydra_entry(main: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """The wrapper of every Hydra entry point: `catdog.common.errors.reports_user_errors` (a user's mistake in one line,
    `HYDRA_FULL_ERROR=1` shows its traceback), with OmegaConf's mistakes (a missing key, a bad interpolation)
    reported as config errors, and the run folder Hydra made for a refused command removed; TensorFlow's start-up
    banner hidden (`catdog.common.console`) in the process that runs the job, a sweep's worker included; the exit
    spared the final garbage collections (`freeze_at_exit`)."""
    freeze_at_exit()

    @functools.wraps(main)
    def task(cfg: DictConfig) -> Any:
        die_with_parent()  # a search's training command, a joblib worker of it included
        quiet_console()
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
