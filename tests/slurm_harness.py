"""A real single-node Slurm cluster for the tests: munged, slurmctld and slurmd on this machine.

Everything lives in one temporary directory: its own munge key and socket, slurm.conf
(free ports, state and spool folders, logs), so nothing of a system Slurm or munge is used
or touched. No cgroups (proctrack/linuxproc, task/none), no accounting; the node offers
this machine's CPUs and the jobs run the tiny profile on the CPU. `MaxArraySize` is small
so the test of a too-large job array is quick. `stop()` cancels every job, then stops the
daemons, and waits until their processes are gone.

Needs root (slurmd starts jobs as their user) and Debian's slurm-wlm and munge
(scripts/install-test-deps.sh installs them).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from prefect_harness import descendants, free_port

DAEMONS = ("munged", "slurmctld", "slurmd")
MAX_ARRAY_SIZE = 4


def missing() -> str | None:
    """Why a cluster cannot start here, or None."""
    absent = [name for name in (*DAEMONS, "sbatch", "squeue", "scancel", "scontrol") if shutil.which(name) is None
              and not Path(f"/usr/sbin/{name}").exists()]
    if absent:
        return f"not installed: {', '.join(absent)} (run scripts/install-test-deps.sh)"
    if os.geteuid() != 0:
        return "slurmd must run as root to start jobs"
    return None


def _binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


@dataclass
class SlurmCluster:
    home: Path
    node: str
    cpus: int
    processes: dict[str, subprocess.Popen]

    @property
    def conf(self) -> Path:
        return self.home / "slurm.conf"

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """`base` plus what the Slurm commands need to find this cluster."""
        return {**base, "SLURM_CONF": str(self.conf)}

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        done = subprocess.run([_binary(args[0]), *args[1:]], env=self.env(dict(os.environ)), capture_output=True,
                              text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: exit {done.returncode}: {done.stderr}{done.stdout}")
        return done

    def queue(self) -> list[str]:
        """Every job in the queue: '<id> <state> <name>'."""
        out = self.run("squeue", "--noheader", "--array", "--format=%i %T %j").stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def log(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.home.glob("*.log")))

    def wait_idle(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.queue():
            if time.monotonic() > deadline:
                raise RuntimeError(f"jobs still queued after {timeout}s: {self.queue()}")
            time.sleep(1)

    def stop(self) -> None:
        if self.processes.get("slurmctld") and self.processes["slurmctld"].poll() is None:
            self.run("scancel", "--full", "--user=root", check=False)
            try:
                self.wait_idle(timeout=60)
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        # Jobs left by a failed scancel run below slurmd (slurmstepd): they go with it.
        for name in reversed(DAEMONS):
            process = self.processes.get(name)
            if process is None:
                continue
            tree = [process.pid, *descendants(process.pid)] if name == "slurmd" else [process.pid]
            for pid in tree:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
            for pid in tree[1:]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _conf(home: Path, node: str, cpus: int, memory_mb: int) -> str:
    return "\n".join([
        "ClusterName=bastest",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={free_port()}",
        f"SlurmdPort={free_port()}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={home}/munge.socket",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"StateSaveLocation={home}/state",
        f"SlurmdSpoolDir={home}/spool",
        f"SlurmctldPidFile={home}/slurmctld.pid",
        f"SlurmdPidFile={home}/slurmd.pid",
        f"SlurmctldLogFile={home}/slurmctld.log",
        f"SlurmdLogFile={home}/slurmd.log",
        "ProctrackType=proctrack/linuxproc",   # no cgroups in a container
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=sched_interval=2",
        "MpiDefault=none",
        "ReturnToService=2",
        f"MaxArraySize={MAX_ARRAY_SIZE}",
        "KillWait=20",
        "SlurmdTimeout=60",
        "InactiveLimit=0",
        "MinJobAge=2",               # finished jobs leave squeue's view quickly
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
        f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def start_cluster(home: Path, cpus: int = 2, memory_mb: int = 8000, timeout: float = 60) -> SlurmCluster:
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    for sub in ("state", "spool"):
        (home / sub).mkdir(exist_ok=True)
    node = socket.gethostname().split(".")[0]
    key = home / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    os.chmod(key, 0o600)
    (home / "slurm.conf").write_text(_conf(home, node, cpus, memory_mb))
    cluster = SlurmCluster(home, node, cpus, {})
    env = cluster.env(dict(os.environ))
    try:
        cluster.processes["munged"] = subprocess.Popen(
            [_binary("munged"), "--foreground", "--force", f"--socket={home}/munge.socket", f"--key-file={key}",
             f"--pid-file={home}/munged.pid", f"--log-file={home}/munged.log", f"--seed-file={home}/munged.seed"],
            env=env, stdout=subprocess.DEVNULL, stderr=open(home / "munged.err.log", "w"), start_new_session=True)
        _wait_for(lambda: (home / "munge.socket").exists(), "munged socket", cluster, timeout)
        cluster.processes["slurmctld"] = subprocess.Popen(
            [_binary("slurmctld"), "-D", "-i", "-f", str(cluster.conf)], env=env, stdout=subprocess.DEVNULL,
            stderr=open(home / "slurmctld.err.log", "w"), start_new_session=True)
        _wait_for(lambda: cluster.run("scontrol", "ping", check=False).stdout.count("UP") > 0,
                  "slurmctld", cluster, timeout)
        cluster.processes["slurmd"] = subprocess.Popen(
            [_binary("slurmd"), "-D", "-N", node, "-f", str(cluster.conf)], env=env, stdout=subprocess.DEVNULL,
            stderr=open(home / "slurmd.err.log", "w"), start_new_session=True)
        _wait_for(lambda: "idle" in cluster.run("sinfo", "--noheader", "--format=%T", check=False).stdout,
                  "the node to be idle", cluster, timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_for(ready, what: str, cluster: SlurmCluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, process in cluster.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{cluster.log()}")
        if ready():
            return
        time.sleep(0.5)
    raise RuntimeError(f"waited {timeout}s for {what}:\n{cluster.log()}")
