"""GPU workers of the work pool as a Slurm job array (`bas slurm submit | status | cancel`).

Each array task runs `bas worker --idle-timeout S` in the checkout: one Prefect process
worker of `orchestration.work_pool`, one flow run at a time, on the GPU Slurm gave the job
(Slurm sets CUDA_VISIBLE_DEVICES from `--gres`). The worker is the batch script's process
(`exec`), so `--signal=B:TERM@<s>` before the time limit, `scancel` and preemption all reach
it as SIGTERM: it stops the flow run it holds (Prefect marks it Crashed), the full_eval that
submitted the run submits it again, another worker resumes it from what the engine saved
(flows/dispatch.py, bas.lease). With no flow run for `idle_timeout_seconds` it exits, so the
GPU goes back to the queue.

Everything Slurm is reached through its commands (sbatch, squeue, scancel, scontrol), as a
user would; every option comes from `orchestration.slurm` in params.yaml.
"""

from __future__ import annotations

import getpass
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from bas import attempts, paths
from bas.config import Config
from bas.errors import BasError
from bas.io import atomic_write_text

WORKER_PREFIX = "slurm-"  # worker names: slurm-<array job id>_<task id>, as in the attempt records


def _command(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BasError(f"`{name}` not found on PATH: run `bas slurm` on a Slurm login/head node "
                       "(Debian/Ubuntu: apt-get install slurm-client)")
    return found


def _call(args: Sequence[str], what: str, timeout: float = 60) -> str:
    done = subprocess.run([_command(args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise BasError(f"{what}: `{shlex.join(args)}` failed (exit {done.returncode}): "
                       f"{(done.stderr or done.stdout).strip()}")
    return done.stdout


def batch_script(cfg: Config, workers: int, project_dir: Path, params_file: str,
                 overrides: Sequence[str] = ()) -> str:
    """The sbatch script of an array of `workers` GPU workers."""
    orch, slurm = cfg.orchestration, cfg.orchestration.slurm
    if not orch.work_pool:
        raise BasError("params: orchestration.work_pool is null: name the GPU work pool the Slurm workers "
                       "serve (e.g. -S orchestration.work_pool=bas-gpu) and run `bas deploy`")
    if workers < 1:
        raise BasError(f"--workers {workers}: submit at least one worker")
    logs = slurm_dir(cfg) / "logs"
    options = [f"--job-name={slurm.job_name}", f"--array=0-{workers - 1}", f"--time={slurm.time_limit}",
               f"--cpus-per-task={slurm.cpus_per_task}", "--ntasks=1", "--nodes=1",
               f"--output={logs}/%x-%A_%a.out", f"--chdir={project_dir}"]
    if slurm.signal_seconds:
        options.append(f"--signal=B:TERM@{slurm.signal_seconds}")
    for flag, value in (("partition", slurm.partition), ("gres", slurm.gres), ("account", slurm.account),
                        ("qos", slurm.qos), ("mem", slurm.mem)):
        if value:
            options.append(f"--{flag}={value}")
    options += list(slurm.extra_sbatch)
    worker = ["bas", "--params", params_file]
    for item in overrides:
        worker += ["-S", item]
    worker += ["-S", f"orchestration.work_pool={orch.work_pool}", "worker",
               "--name", f"{WORKER_PREFIX}${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}",
               "--project-dir", str(project_dir), "--idle-timeout", f"{slurm.idle_timeout_seconds:g}"]
    # The name keeps its ${...} for the shell: quote every other word.
    command = " ".join(w if w.startswith(WORKER_PREFIX) else shlex.quote(w) for w in worker)
    lines = ["#!/bin/bash", *(f"#SBATCH {option}" for option in options), "",
             f"# bas GPU worker of pool {orch.work_pool!r} (bas slurm submit; docs/ORCHESTRATION.md)",
             "set -eo pipefail", f"cd {shlex.quote(str(project_dir))}", slurm.setup,
             'echo "bas worker on $(hostname), job ${SLURM_JOB_ID}, GPUs: ${CUDA_VISIBLE_DEVICES:-none}"',
             f'exec {command}', ""]
    return "\n".join(lines)


def slurm_dir(cfg: Config) -> Path:
    """Saved sbatch scripts and the jobs' logs, on the shared storage."""
    return paths.records_dir(cfg) / "slurm"


def save_script(cfg: Config, script: str) -> Path:
    path = slurm_dir(cfg) / f"{cfg.orchestration.slurm.job_name}-{time.strftime('%Y%m%dT%H%M%S')}.sbatch"
    atomic_write_text(path, script)
    (slurm_dir(cfg) / "logs").mkdir(parents=True, exist_ok=True)
    return path


def max_array_size() -> Optional[int]:
    """The cluster's MaxArraySize (array indices must be below it), None when unreadable."""
    for line in _call(["scontrol", "show", "config"], "reading the Slurm configuration").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize":
            try:
                return int(value.strip())
            except ValueError:
                return None
    return None


def submit(script_path: Path, workers: int) -> str:
    """sbatch the script; the array job id. A too-large array is refused before sbatch is asked."""
    limit = max_array_size()
    if limit is not None and workers > limit:
        raise BasError(f"--workers {workers}: this cluster's MaxArraySize is {limit} (scontrol show config), "
                       f"so a job array holds at most {limit} workers; submit {limit} or fewer")
    out = _call(["sbatch", "--parsable", str(script_path)], f"submitting {script_path}")
    return out.strip().split(";")[0]


@dataclass
class Job:
    job_id: str      # <array job id>_<task id>, or <array job id>_[0-3] for tasks not started
    state: str
    elapsed: str
    node: str
    reason: str

    @property
    def worker(self) -> str:
        return WORKER_PREFIX + self.job_id


def jobs(cfg: Config) -> list[Job]:
    """The job array tasks named `orchestration.slurm.job_name` in the queue."""
    out = _call(["squeue", "--noheader", "--array", f"--name={cfg.orchestration.slurm.job_name}",
                 f"--user={getpass.getuser()}",
                 "--format=%i|%T|%M|%N|%r"], "reading the Slurm queue")
    found = []
    for line in out.splitlines():
        if line.strip():
            job_id, state, elapsed, node, reason = (line.split("|") + [""] * 5)[:5]
            found.append(Job(job_id.strip(), state.strip(), elapsed.strip(), node.strip(), reason.strip()))
    return found


def current_work(cfg: Config) -> dict[str, list[str]]:
    """worker name -> the '<stage> <method>/<scene>' it is working on (live attempt records)."""
    work: dict[str, list[str]] = {}
    root = paths.records_dir(cfg) / "attempts"
    for directory in sorted(root.glob("*/*/*")):
        for record in attempts.read_attempts(directory):
            if record.get("status") in attempts.ALIVE and not attempts.is_stale(
                    record, cfg.orchestration.stale_after_seconds):
                what = f"{record['stage']} {record['method']}/{record['scene_id']}"
                if record["status"] == attempts.WAITING:
                    what += " (waiting for another run's lease)"
                work.setdefault(record.get("worker") or "?", []).append(what)
    return work


def pool_queue(cfg: Config) -> dict[str, list[str]]:
    """The work pool's flow runs not finished: state name -> run names."""
    # prefect: only to read the work pool's queue (`bas slurm submit/cancel` start without it)
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType,
                                                WorkPoolFilter, WorkPoolFilterName)
    from prefect.client.schemas.objects import StateType

    waiting = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[cfg.orchestration.work_pool])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=waiting))))
    queue: dict[str, list[str]] = {}
    for run in runs:
        queue.setdefault(run.state.name if run.state else "?", []).append(run.name)
    return queue


def cancel(cfg: Config, job_ids: Sequence[str] = ()) -> list[str]:
    """scancel the given jobs, or every job named `orchestration.slurm.job_name`; what was asked."""
    targets = list(job_ids) or [f"--name={cfg.orchestration.slurm.job_name}", f"--user={getpass.getuser()}"]
    _call(["scancel", *targets], "cancelling the Slurm workers")
    return targets
