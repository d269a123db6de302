"""A real single-node Slurm cluster for tests: munged, slurmctld and slurmd from Debian's packages, each started
in the foreground on loopback with its own key, sockets, ports, state and logs under one folder, and stopped
with it. Needs root (SlurmUser=root) and `slurm-wlm` + `munge` (.ci/run installs them)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from processes import carrying

from catdog.team.loopback import free_port

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo")
DAEMON_PROGRAMS = (b"munged", b"slurmctld", b"slurmd")


def missing() -> str | None:
    """Why no cluster can start here, or None."""
    absent = [d for d in DAEMONS if shutil.which(d) is None and not Path("/usr/sbin", d).exists()]
    if absent:
        return f"Slurm not installed ({', '.join(absent)} missing; .ci/run installs Debian's slurm-wlm and munge)"
    if os.geteuid() != 0:
        return "a test Slurm cluster runs its daemons as root (SlurmUser=root); this test is not root"
    return None


def slurm_conf(root: Path, munge_socket: Path) -> str:
    node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    hostname = node.split()[0].split("=", 1)[1]
    return "\n".join(
        [
            "ClusterName=catdogtest",
            f"SlurmctldHost={hostname}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "SlurmUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={munge_socket}",
            f"StateSaveLocation={root / 'state'}",
            f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={root / 'slurmctld.log'}",
            f"SlurmdLogFile={root / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU_Memory",
            "MpiDefault=none",
            "ReturnToService=2",
            f"{node} NodeAddr=127.0.0.1 State=UNKNOWN",
            f"PartitionName=test Nodes={hostname} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def wait_for(check, what: str, logs: list[Path], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    tails = "\n".join(f"--- {log}\n{log.read_text()[-2000:]}" for log in logs if log.exists())
    raise RuntimeError(f"{what} not ready after {timeout_s:.0f} s\n{tails}")


@contextlib.contextmanager
def single_node_slurm(root: Path) -> Iterator[dict[str, str]]:
    """Start the cluster under `root`; yield the environment its client commands need (SLURM_CONF)."""
    for sub in ("state", "spool", "munge"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    munge = root / "munge"
    munge.chmod(0o700)
    key = munge / "munge.key"
    key.write_bytes(secrets.token_bytes(128))
    key.chmod(0o600)
    munge_socket = munge / "munge.socket"
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, munge_socket))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    started: list[subprocess.Popen] = []
    logs = [munge / "munged.log", root / "slurmctld.log", root / "slurmd.log"]

    def start(*cmd: str) -> None:
        started.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        )

    def node_idle() -> bool:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
        return out.returncode == 0 and out.stdout.strip() == "idle"

    try:
        start(
            "munged",
            "--foreground",
            "--force",
            f"--socket={munge_socket}",
            f"--key-file={key}",
            f"--pid-file={munge / 'munged.pid'}",
            f"--log-file={logs[0]}",
            f"--seed-file={munge / 'munged.seed'}",
        )
        wait_for(munge_socket.exists, "munged", logs)
        start("slurmctld", "-D", "-i", "-f", str(conf))
        start("slurmd", "-D", "-f", str(conf))
        wait_for(node_idle, "the Slurm node", logs)
        yield env
    finally:
        cancel_jobs(env)
        for process in reversed(started):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 15)
        for process in started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()


def cancel_jobs(env: dict[str, str], timeout_s: float = 20) -> None:
    """Cancel every job and wait for its steps to end; then kill whatever still carries this cluster's SLURM_CONF
    (job steps, their `srun`s and shells, which slurmd does not take down with it)."""
    subprocess.run(["scancel", "--full", "--user", "root"], env=env, capture_output=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h", "-t", "PD,R,CG"], env=env, capture_output=True, text=True)
        if queue.returncode != 0 or not queue.stdout.strip():
            break
        time.sleep(0.5)
    for pid, argv in carrying(f"SLURM_CONF={env['SLURM_CONF']}"):
        if argv and argv[0].rsplit(b"/", 1)[-1] not in DAEMON_PROGRAMS:  # the fixture stops those in order
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
