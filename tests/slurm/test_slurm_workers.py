"""GPU workers as Slurm jobs, on a real single-node Slurm (tests/slurm_harness.py).

A Prefect server, the deployments on a fresh pool, and `bas slurm submit` jobs of that
pool; the tiny profile on the CPU, one CPU a job. The first test runs a 2 methods x 2
scenes evaluation through two worker jobs and scancels one in the middle of a training;
the others check the idle time-out and the array-size limit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from bas import attempts, config, paths
from orchestration_helpers import REPO, set_args
from slurm_harness import MAX_ARRAY_SIZE, missing, start_cluster
from orchestration_helpers import tiny_overrides

pytestmark = pytest.mark.slow

METHODS = ("bas", "ti_m")


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    why = missing()
    if why:
        pytest.fail(f"Slurm test cluster cannot start: {why}")
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def deployed(prefect_server, tmp_path_factory, coco_root):
    """A fresh GPU pool with the deployments pointed at it."""
    pool = f"slurm-{uuid.uuid4().hex[:6]}"
    overrides = pool_overrides(tmp_path_factory.mktemp("unused") / "storage", coco_root, pool, METHODS)
    done = subprocess.run(_bas(overrides, "deploy"), cwd=REPO, env=prefect_server.env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return overrides


def pool_overrides(storage: Path, coco_root: Path, pool: str, methods) -> dict:
    return {**tiny_overrides(storage, coco_root, methods), "orchestration.work_pool": pool,
            "orchestration.controller_pool": f"{pool}-controller", "orchestration.concurrency": 2,
            "orchestration.poll_seconds": 1, "orchestration.heartbeat_seconds": 1,
            "orchestration.stale_after_seconds": 15, "orchestration.startup_grace_seconds": 240,
            "orchestration.retry_delay_seconds": 1}


def completed(cfg, stage: str, methods) -> dict[tuple[str, str], list[dict]]:
    found = {}
    for method in methods:
        for directory in sorted((paths.records_dir(cfg) / "attempts" / stage / method).glob("*")):
            found[(method, directory.name)] = [r for r in attempts.read_attempts(directory)
                                               if r["status"] == attempts.COMPLETED]
    return found


def assert_outputs_complete(cfg, methods) -> None:
    import pandas as pd

    scene_ids = sorted(pd.read_parquet(paths.scene_index(cfg))["scene_id"].unique())
    assert len(scene_ids) == 2
    for method in methods:
        for scene_id in scene_ids:
            run = paths.run_dir(cfg, method, scene_id)
            manifest = pd.read_parquet(paths.manifest_path(run))
            assert len(manifest) == 3 and manifest["path"].is_unique  # 3 subsets x 1 template x 1 seed
            assert sorted(p.name for p in paths.images_dir(run).iterdir()) == sorted(Path(p).name for p in manifest["path"])
            scores = pd.read_parquet(paths.scene_scores_path(cfg, method, scene_id))
            assert set(scores["path"]) == set(manifest["path"])
    assert (paths.reports_dir(cfg) / "report.html").exists()


def summary_of(cfg) -> dict:
    import json

    [path] = sorted(paths.run_summaries_dir(cfg).glob("*-full_eval-*.json"))
    return json.loads(path.read_text())


def _bas(overrides: dict, *command: str) -> list[str]:
    return [sys.executable, "-m", "bas.cli", *set_args(overrides), *command]


def _slurm_overrides(overrides: dict, storage: Path, idle_timeout: float) -> dict:
    # One CPU a job, no GPU gres on this CPU-only node; the job finds this checkout's Python.
    return {**overrides, "paths.storage_root": str(storage),
            "orchestration.slurm.cpus_per_task": 1, "orchestration.slurm.gres": None,
            "orchestration.slurm.mem": None, "orchestration.slurm.time_limit": "00:30:00",
            "orchestration.slurm.idle_timeout_seconds": idle_timeout,
            "orchestration.slurm.setup": f"source scripts/env.sh && export PATH={Path(sys.executable).parent}:$PATH"}


def _submit(env, overrides: dict, workers: int) -> subprocess.CompletedProcess:
    return subprocess.run(_bas(overrides, "slurm", "submit", "--workers", str(workers), "--project-dir", str(REPO)),
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def _job_logs(cfg) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
                     for p in sorted((paths.records_dir(cfg) / "slurm" / "logs").glob("*.out")))


def _wait_empty(cluster, seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while cluster.queue() and time.monotonic() < deadline:
        time.sleep(1)
    return cluster.queue()


def test_a_cancelled_worker_job_loses_nothing(prefect_server, slurm_cluster, deployed, tmp_path):
    overrides = _slurm_overrides(deployed, tmp_path / "storage", idle_timeout=45)
    cfg = config.load(REPO / "params.yaml", overrides)
    env = slurm_cluster.env(prefect_server.env())
    # `bas run --slurm-workers 2` submits the two worker jobs, then fans the scenes out to them.
    run = subprocess.Popen(_bas(overrides, "run", "--slurm-workers", "2"), cwd=REPO, env=env,
                           stdout=open(tmp_path / "run.log", "w"), stderr=subprocess.STDOUT)

    def logs() -> str:
        return f"{(tmp_path / 'run.log').read_text()[-6000:]}\n{_job_logs(cfg)}\n{slurm_cluster.log()}"

    try:
        # Wait until a worker job is in the middle of a training, then scancel that job.
        victim, deadline = None, time.monotonic() + 600
        while victim is None:
            assert run.poll() is None and time.monotonic() < deadline, logs()
            for directory in (paths.records_dir(cfg) / "attempts" / "train_generate").glob("*/*"):
                running = [r for r in attempts.read_attempts(directory) if r["status"] == attempts.RUNNING]
                if running:
                    victim = running[0]
                    break
            time.sleep(0.2)
        job_id = victim["worker"].removeprefix("slurm-")
        status = subprocess.run(_bas(overrides, "slurm", "status"), cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=120)
        assert status.returncode == 0, status.stderr
        [line] = [line for line in status.stdout.splitlines() if line.strip().startswith(job_id)]
        assert "RUNNING" in line and f"train_generate {victim['method']}/{victim['scene_id']}" in line, status.stdout
        assert f"work pool {cfg.orchestration.work_pool!r}" in status.stdout
        cancel = subprocess.run(_bas(overrides, "slurm", "cancel", job_id), cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=60)
        assert cancel.returncode == 0, cancel.stderr
        assert run.wait(timeout=1200) == 0, logs()
        # Nothing left to do: the surviving worker's idle time-out ends its job.
        assert _wait_empty(slurm_cluster, 120) == [], logs()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()

    summary = summary_of(cfg)
    assert summary["failures"] == [], logs()
    lost = next(o for o in summary["outcomes"] if (o["stage"], o["method"], o["scene_id"])
                == ("train_generate", victim["method"], victim["scene_id"]))
    assert lost["status"] == "completed" and len(lost["run_ids"]) == 2  # resubmitted once
    records = attempts.read_attempts(paths.attempts_dir(cfg, "train_generate", victim["method"], victim["scene_id"]))
    assert records[0]["attempt_id"] == victim["attempt_id"] and records[0]["status"] in (attempts.FAILED, attempts.LOST)
    assert records[-1]["status"] == attempts.COMPLETED and records[-1]["worker"] != victim["worker"]
    for stage in ("train_generate", "score"):
        found = completed(cfg, stage, METHODS)
        assert len(found) == 4 and all(len(done) == 1 for done in found.values()), found
    assert_outputs_complete(cfg, METHODS)
    assert "SIGTERM" in _job_logs(cfg)
    [script] = (paths.records_dir(cfg) / "slurm").glob("*.sbatch")
    assert "#SBATCH --array=0-1" in script.read_text() and "--idle-timeout 45" in script.read_text()
    assert "submitted Slurm job array" in (tmp_path / "run.log").read_text()


def test_an_idle_worker_job_ends_and_a_too_large_array_is_refused(prefect_server, slurm_cluster, deployed,
                                                                    tmp_path):
    overrides = _slurm_overrides(deployed, tmp_path / "storage", idle_timeout=3)
    cfg = config.load(REPO / "params.yaml", overrides)
    env = slurm_cluster.env(prefect_server.env())
    submitted = _submit(env, overrides, 1)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    started = time.monotonic()
    assert _wait_empty(slurm_cluster, 180) == [], _job_logs(cfg)
    assert time.monotonic() - started < 180
    assert "no flow run for 3s: exiting" in _job_logs(cfg)

    too_many = _submit(env, overrides, MAX_ARRAY_SIZE + 1)
    assert too_many.returncode == 2
    assert f"MaxArraySize is {MAX_ARRAY_SIZE}" in too_many.stderr and f"--workers {MAX_ARRAY_SIZE + 1}" in too_many.stderr
    assert slurm_cluster.queue() == []

    # `bas slurm cancel` with no job ids: every job of orchestration.slurm.job_name goes.
    busy = {**overrides, "orchestration.slurm.idle_timeout_seconds": 600}
    assert _submit(env, busy, 2).returncode == 0
    cancel = subprocess.run(_bas(busy, "slurm", "cancel"), cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=60)
    assert cancel.returncode == 0, cancel.stderr
    assert _wait_empty(slurm_cluster, 90) == [], _job_logs(cfg)


def test_dry_run_prints_and_saves_the_script_and_submits_nothing(slurm_cluster, deployed, tmp_path):
    overrides = {**_slurm_overrides(deployed, tmp_path / "storage", idle_timeout=60),
                 "orchestration.slurm.partition": "gpu", "orchestration.slurm.gres": "gpu:a100:1",
                 "orchestration.slurm.account": "lab", "orchestration.slurm.qos": "normal",
                 "orchestration.slurm.extra_sbatch": ["--constraint=a100"]}
    cfg = config.load(REPO / "params.yaml", overrides)
    done = subprocess.run(_bas(overrides, "slurm", "submit", "--workers", "3", "--dry-run"), cwd=REPO,
                          env=slurm_cluster.env(dict(os.environ)), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    [saved] = (paths.records_dir(cfg) / "slurm").glob("*.sbatch")
    script = saved.read_text()
    assert script in done.stdout
    for line in ("#SBATCH --array=0-2", "#SBATCH --partition=gpu", "#SBATCH --gres=gpu:a100:1",
                 "#SBATCH --account=lab", "#SBATCH --qos=normal", "#SBATCH --constraint=a100",
                 "#SBATCH --signal=B:TERM@120", "#SBATCH --time=00:30:00"):
        assert line in script.splitlines()
    assert "--name slurm-${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}" in script
    assert slurm_cluster.queue() == []
