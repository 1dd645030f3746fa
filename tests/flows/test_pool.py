"""full_eval on a real Prefect server with a process work pool and two `bas worker`s.

Tiny profile, 2 COCO scenes x 2 methods. The first test checks that both workers ran scene
flows and that every output is complete; the second kills one worker (with the flow run
process it started) in the middle of a scene and checks that the run still completes, the
lost scene is rerun on the surviving worker, and nothing is lost or made twice.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from bas import attempts, config, paths
from orchestration_helpers import REPO, set_args, tiny_overrides
from prefect_harness import kill_tree, listening_addresses

pytestmark = pytest.mark.slow

METHODS = ("bas", "ti_m")


def _pool_overrides(storage: Path, coco_root: Path, pool: str) -> dict:
    return {**tiny_overrides(storage, coco_root, METHODS), "orchestration.work_pool": pool,
            "orchestration.controller_pool": f"{pool}-controller", "orchestration.concurrency": 2,
            "orchestration.poll_seconds": 1, "orchestration.heartbeat_seconds": 1,
            "orchestration.stale_after_seconds": 15, "orchestration.startup_grace_seconds": 240,
            "orchestration.retry_delay_seconds": 1}


def _bas(overrides: dict, *command: str) -> list[str]:
    return [sys.executable, "-m", "bas.cli", *set_args(overrides), *command]


@pytest.fixture(scope="module")
def pool(prefect_server, tmp_path_factory, coco_root):
    """A fresh pool, the deployments pointed at it, and two workers, w1 and w2."""
    name = f"gpu-{uuid.uuid4().hex[:6]}"
    logs = tmp_path_factory.mktemp("workers")
    overrides = _pool_overrides(logs / "unused-storage", coco_root, name)
    deploy = subprocess.run(_bas(overrides, "deploy"), cwd=REPO, env=prefect_server.env(),
                            capture_output=True, text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr

    def start(worker: str) -> None:
        prefect_server.start_worker(worker, REPO / "params.yaml", [f"orchestration.work_pool={name}"], logs)

    for worker in ("w1", "w2"):
        start(worker)
    try:
        yield {"overrides": overrides, "start": start, "logs": logs}
    finally:
        prefect_server.stop_workers()


@pytest.fixture
def overrides(pool, tmp_path, coco_root):
    """This test's params: its own storage root on the module's pool."""
    return {**pool["overrides"], "paths.storage_root": str(tmp_path / "storage")}


def _run(prefect_server, overrides, tmp_path) -> subprocess.Popen:
    log = open(tmp_path / "full_eval.log", "w")
    return subprocess.Popen(_bas(overrides, "run"), cwd=REPO, env=prefect_server.env(),
                            stdout=log, stderr=subprocess.STDOUT)


def _log(*directories: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for d in directories for p in sorted(d.glob("*.log")))


def _completed(cfg, stage: str, methods=METHODS) -> dict[tuple[str, str], list[dict]]:
    found = {}
    for method in methods:
        for scene_id in _scene_ids(cfg):
            records = attempts.read_attempts(paths.attempts_dir(cfg, stage, method, scene_id))
            found[(method, scene_id)] = [r for r in records if r["status"] == attempts.COMPLETED]
    return found


def _scene_ids(cfg) -> list[str]:
    return sorted(pd.read_parquet(paths.scene_index(cfg))["scene_id"].unique())


def _assert_outputs_complete(cfg, methods=METHODS) -> None:
    scene_ids = _scene_ids(cfg)
    assert len(scene_ids) == 2
    for method in methods:
        for scene_id in scene_ids:
            run = paths.run_dir(cfg, method, scene_id)
            manifest = pd.read_parquet(paths.manifest_path(run))
            # 2 concepts: 3 subsets x 1 template x 1 seed; each image once, each file there.
            assert len(manifest) == 3 and manifest["path"].is_unique
            assert sorted(p.name for p in paths.images_dir(run).iterdir()) == sorted(Path(p).name for p in manifest["path"])
            scores = pd.read_parquet(paths.scene_scores_path(cfg, method, scene_id))
            assert set(scores["path"]) == set(manifest["path"])
    assert (paths.reports_dir(cfg) / "report.html").exists()


def _summary(cfg) -> dict:
    [path] = sorted(paths.run_summaries_dir(cfg).glob("*-full_eval-*.json"))
    return json.loads(path.read_text())


def test_full_eval_fans_out_to_both_workers(prefect_server, pool, overrides, tmp_path):
    cfg = config.load(REPO / "params.yaml", overrides)
    run = _run(prefect_server, overrides, tmp_path)
    assert run.wait(timeout=900) == 0, _log(tmp_path, pool["logs"])

    summary = _summary(cfg)
    assert summary["failures"] == []
    assert summary["stages"] == {"train_generate": {"completed": 4}, "score": {"completed": 4}}
    assert summary["images"] == 12
    for stage in ("train_generate", "score"):
        completed = _completed(cfg, stage)
        assert all(len(done) == 1 for done in completed.values()), completed
    workers = {done[0]["worker"] for done in _completed(cfg, "train_generate").values()}
    workers |= {done[0]["worker"] for done in _completed(cfg, "score").values()}
    assert workers == {"w1", "w2"}
    _assert_outputs_complete(cfg)
    # The server listens on loopback only.
    assert listening_addresses(prefect_server.port) == {"127.0.0.1"}


def test_deploy_made_the_pools_and_the_cron_schedule(prefect_server, pool):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    orch = config.load(REPO / "params.yaml", pool["overrides"]).orchestration
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        with get_client(sync_client=True) as client:
            gpu, controller = client.read_work_pool(orch.work_pool), client.read_work_pool(orch.controller_pool)
            scheduled = client.read_deployment_by_name("full-eval/scheduled")
            scene = client.read_deployment_by_name("train-generate-scene/gpu")
    assert (gpu.type, gpu.concurrency_limit) == ("process", 2)
    assert controller.concurrency_limit == 1
    assert scheduled.work_pool_name == orch.controller_pool and scene.work_pool_name == orch.work_pool
    [schedule] = scheduled.schedules
    assert schedule.active and schedule.schedule.cron == orch.schedule_cron
    assert scheduled.parameters == {"params_file": "params.yaml"}


def test_a_killed_worker_loses_nothing(prefect_server, pool, overrides, tmp_path):
    # One method on two scenes: each worker takes a scene, one of them is killed.
    overrides = {**overrides, "orchestration.methods": ["bas"]}
    cfg = config.load(REPO / "params.yaml", overrides)
    run = _run(prefect_server, overrides, tmp_path)
    # Wait until a worker is in the middle of a scene, then kill it with its flow run process.
    victim = None
    deadline = time.monotonic() + 600
    while victim is None:
        assert run.poll() is None and time.monotonic() < deadline, _log(tmp_path, pool["logs"])
        for directory in (paths.records_dir(cfg) / "attempts" / "train_generate" / "bas").glob("*"):
            running = [r for r in attempts.read_attempts(directory) if r["status"] == attempts.RUNNING]
            if running:
                victim = running[0]
                break
        time.sleep(0.2)
    kill_tree(prefect_server.workers[victim["worker"]])
    survivor = ({"w1", "w2"} - {victim["worker"]}).pop()
    try:
        assert run.wait(timeout=900) == 0, _log(tmp_path, pool["logs"])
    finally:
        pool["start"](victim["worker"])  # the machine is back for the other tests

    summary = _summary(cfg)
    assert summary["failures"] == []
    lost_job = next(o for o in summary["outcomes"]
                    if (o["stage"], o["method"], o["scene_id"]) == ("train_generate", victim["method"], victim["scene_id"]))
    assert lost_job["status"] == "completed" and len(lost_job["run_ids"]) == 2  # resubmitted once
    records = attempts.read_attempts(paths.attempts_dir(cfg, "train_generate", victim["method"], victim["scene_id"]))
    assert [r["status"] for r in records] == [attempts.LOST, attempts.COMPLETED]
    assert records[0]["attempt_id"] == victim["attempt_id"] and records[1]["worker"] == survivor
    # Every (method, scene) trained and scored exactly once; grids complete, no duplicates.
    for stage in ("train_generate", "score"):
        assert all(len(done) == 1 for done in _completed(cfg, stage, ["bas"]).values())
    _assert_outputs_complete(cfg, ["bas"])

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(lost_job["run_ids"][0]).state
    assert state.is_crashed() and "silent" in state.message
