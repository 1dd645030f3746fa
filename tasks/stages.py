"""Prefect tasks over the library stages of `bas.pipeline`: each body is one library call.

What makes them tasks rather than plain calls:
- retries with exponential backoff on transient errors; a `BasError` (the user must fix
  something) and a full disk (ENOSPC, EDQUOT, a failed torch or safetensors write, even one
  outside bas's own writers) fail at once;
- the expensive per-(method, scene) tasks are cached on content: the key is the library's
  fingerprint of what the outputs depend on (scene content hash, the method's resolved
  recipe, the settings that decide pixels or scores, and the version of the code that makes
  them). A cache record is valid only while the outputs it stands for are on disk as they
  were recorded: when one is missing or changed (deleted, truncated, removed by DVC before it
  reruns a stage), the key function drops the record first, so the task runs. Results and
  cache records are persisted as JSON under `<storage_root>/records/prefect-results`, which
  every worker shares.

`configured(task, cfg)` applies the run's `orchestration` settings; flows call tasks
through it so that no number lives in orchestration code.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.runtime import flow_run
from prefect.tasks import Task, exponential_backoff

from bas import paths, pipeline
from bas.config import Config
from bas.errors import BasError
from bas.io import disk_full_reason


def is_transient(task: Task, task_run: Any, state: Any) -> bool:
    """Retry unless the failure is a `BasError` (bad params or inputs) or a full disk: retrying
    cannot help either."""
    try:
        error = state.result(raise_on_failure=False)
    except Exception:  # the error itself could not be read back: treat as transient
        return True
    return not isinstance(error, BasError) and not (isinstance(error, BaseException) and disk_full_reason(error))


def configured(task_: Task, cfg: Config) -> Task:
    """`task_` with this run's retries, backoff and shared result storage."""
    orch = cfg.orchestration
    return task_.with_options(
        retries=orch.retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=orch.retry_delay_seconds),
        result_storage=paths.prefect_results_dir(cfg).resolve(),
        result_serializer="json",
    )


def _run_id() -> Optional[str]:
    return flow_run.get_id()


def _content_key(stage: str, parameters: dict[str, Any]) -> str:
    cfg, method, scene_id = parameters["cfg"], parameters["method"], parameters["scene_id"]
    status = {"train_generate": pipeline.train_generate_status, "score": pipeline.score_status}[stage](
        cfg, method, scene_id)   # bas.done's one answer: the fingerprint, and whether the outputs are there
    cache_key = f"{stage}-{method}-{scene_id}-{status.fingerprint}"
    record = paths.prefect_results_dir(cfg).resolve() / cache_key
    # Outputs gone or changed: the record must not stand in for them. A record cut short
    # (written as the disk filled) would not read back: the task runs and writes it again.
    if not status.done or not _readable(record):
        record.unlink(missing_ok=True)
    return cache_key


def _readable(record) -> bool:
    try:
        json.loads(record.read_bytes())
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False
    return True


def _train_generate_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return _content_key("train_generate", parameters)


def _score_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return _content_key("score", parameters)


@task(name="stage-scenes", cache_policy=NO_CACHE, retry_condition_fn=is_transient)
def stage_scenes(cfg: Config) -> dict:
    return pipeline.stage(cfg)


@task(name="write-recipes", cache_policy=NO_CACHE, retry_condition_fn=is_transient)
def write_recipes(cfg: Config) -> dict:
    return pipeline.write_recipes(cfg)


@task(name="list-scenes", cache_policy=NO_CACHE, retry_condition_fn=is_transient)
def list_scenes(cfg: Config) -> list[str]:
    return pipeline.scene_ids(cfg)


@task(name="train-generate", task_run_name="train-generate {method}/{scene_id}",
      cache_key_fn=_train_generate_key, persist_result=True, retry_condition_fn=is_transient)
def train_generate(cfg: Config, method: str, scene_id: str) -> dict:
    return pipeline.train_generate(cfg, method, scene_id, run_id=_run_id())


@task(name="score", task_run_name="score {method}/{scene_id}",
      cache_key_fn=_score_key, persist_result=True, retry_condition_fn=is_transient)
def score(cfg: Config, method: str, scene_id: str) -> dict:
    return pipeline.score(cfg, method, scene_id, run_id=_run_id())


@task(name="report", cache_policy=NO_CACHE, retry_condition_fn=is_transient)
def report(cfg: Config) -> dict:
    return pipeline.report(cfg)
