"""TensorFlow's thread pools sized to the jobs that share a machine, so parallel runs don't oversubscribe its cores."""

from __future__ import annotations

import logging
import os

from hydra.core.hydra_config import HydraConfig

from catdog.common.machine import available_cores

log = logging.getLogger(__name__)

# A machine setting, like CATDOG_DATA_MIRROR: threads per run where the launcher cannot know how many runs share
# the machine (`dvc queue start --jobs 2` on 2 cores: CATDOG_THREADS=1). conf/trainer reads it.
THREADS_ENV = "CATDOG_THREADS"
AUTO = "auto"
JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def jobs_on_this_machine() -> int:
    """How many jobs of this process's sweep run at once on this machine: the joblib launcher's n_jobs (negative
    counts back from the core count, as joblib does: -1 is one per core); one for any other launcher (basic runs
    jobs one after another; Slurm gives each job cores of its own)."""
    if not HydraConfig.initialized():
        return 1
    launcher = HydraConfig.get().launcher
    if launcher.get("_target_") != JOBLIB_LAUNCHER:
        return 1
    n_jobs = int(launcher.n_jobs)
    return max(1, n_jobs if n_jobs > 0 else (os.cpu_count() or 1) + 1 + n_jobs)


def thread_count(setting: int | str) -> int:
    """`auto`: this process's cores shared evenly among the jobs that run beside it (at least 1); else the number."""
    if setting == AUTO:
        return max(1, available_cores() // jobs_on_this_machine())
    return int(setting)


def size_thread_pools(setting: int | str) -> int:
    """Give TensorFlow's intra-op (one kernel's parallelism) and inter-op (independent kernels) pools `threads`
    each; returns the count. TensorFlow fixes them when it first runs an op: a later run in the same process (the
    next job of a sweep, a reused joblib worker) keeps the count the first one chose, with a warning if it differs."""
    import tensorflow as tf

    threads = thread_count(setting)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        started = tf.config.threading.get_intra_op_parallelism_threads() or available_cores()  # 0: TF's default
        if started != threads:
            log.warning(
                "TensorFlow's thread pools already run with %d threads in this process; wanted %d", started, threads
            )
        return started
    return threads


def study_threads() -> int:
    """The thread count a `dvc repro` stage trains with on this machine (`auto` outside a sweep): $CATDOG_THREADS
    where it pins one, else every core this process may use."""
    setting = os.environ.get(THREADS_ENV, AUTO).strip() or AUTO
    return available_cores() if setting == AUTO else int(setting)
