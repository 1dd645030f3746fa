"""Work pools and deployments on a Prefect server, from params.yaml and prefect.yaml.

`bas deploy` = `ensure_work_pools` (the GPU pool with its concurrency limit, and the
controller pool of the scheduled full evaluation) + `prefect deploy --all` on
prefect.yaml, whose pool names, schedule and params file come from the environment
variables set here from params (so each value is written once, in params.yaml).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bas.config import Config
from bas.errors import BasError


def _ensure_pool(client, name: str, concurrency_limit) -> str:
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        pool = client.read_work_pool(name)
    except ObjectNotFound:
        pool = None
    if pool is None:
        try:
            client.create_work_pool(WorkPoolCreate(
                name=name, type=ProcessWorker.type, concurrency_limit=concurrency_limit,
                base_job_template=ProcessWorker.get_default_base_job_template()))
            return "created"
        except ObjectAlreadyExists:  # another `bas deploy` made it a moment ago
            pass
    elif pool.type != ProcessWorker.type:
        raise BasError(f"work pool {name!r} exists with type {pool.type!r}; bas needs a {ProcessWorker.type!r} "
                       "pool: choose another orchestration.work_pool / controller_pool")
    client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=concurrency_limit))
    return "updated"


def ensure_work_pools(cfg: Config) -> dict[str, str]:
    """Create (or update the concurrency limit of) the GPU and controller process pools."""
    from prefect.client.orchestration import get_client

    orch = cfg.orchestration
    if not orch.work_pool:
        raise BasError("params: orchestration.work_pool is null: name the GPU work pool to deploy to "
                       "(e.g. -S orchestration.work_pool=bas-gpu)")
    if orch.work_pool == orch.controller_pool:
        raise BasError(f"params: orchestration.controller_pool = {orch.controller_pool!r} is the GPU pool: the "
                       "scheduled full_eval would hold a GPU slot while waiting for the scene runs")
    with get_client(sync_client=True) as client:
        return {orch.work_pool: _ensure_pool(client, orch.work_pool, orch.concurrency),
                # One full evaluation at a time: two would race on the same outputs.
                orch.controller_pool: _ensure_pool(client, orch.controller_pool, 1)}


def deploy_env(cfg: Config, project_dir: Path, params_file: str) -> dict[str, str]:
    """The variables prefect.yaml reads (`{{ $NAME }}`)."""
    orch = cfg.orchestration
    return {"BAS_WORK_POOL": orch.work_pool or "", "BAS_CONTROLLER_POOL": orch.controller_pool,
            "BAS_SCHEDULE_CRON": orch.schedule_cron, "BAS_SCHEDULE_TIMEZONE": orch.schedule_timezone,
            "BAS_PARAMS_FILE": params_file, "BAS_PROJECT_DIR": str(project_dir)}


def deploy(cfg: Config, prefect_file: Path, params_file: str) -> None:
    """Create or update every deployment of `prefect_file` (`prefect deploy --all`)."""
    prefect_file = Path(prefect_file).resolve()
    if not prefect_file.exists():
        raise BasError(f"deployment file not found: {prefect_file}")
    project_dir = prefect_file.parent
    env = {**os.environ, **deploy_env(cfg, project_dir, params_file)}
    command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file)]
    done = subprocess.run(command, cwd=project_dir, env=env, text=True, capture_output=True)
    if done.returncode != 0:
        raise BasError(f"`prefect deploy` failed (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
