"""Fan-out of the per-(method, scene) flow runs, here or on a pool of GPU workers.

`run_scene_jobs(cfg, stage, jobs)` runs one scene flow (`train_generate_scene` or
`score_scene`) per (method, scene) and returns an `Outcome` for each; a failed scene never
stops the others, except a full disk (`storage_full`): every later job would fail the same
way, so the jobs not yet started are not started and the run ends with that one error.

- `orchestration.work_pool` null: the scene flows run one after another in this process,
  as subflows, on whatever Prefect API is configured (the ephemeral one by default).
- a work pool: one flow run per job of the deployment `<flow>/gpu` (prefect.yaml) is
  submitted at once; the pool's workers (one per GPU, the pool's concurrency limit capping
  them) pick them up. This process then watches them every `poll_seconds`:
  - Completed: done (`cached` when the task executed nothing: its cache key matched).
  - Crashed (the process died and Prefect saw it): submitted again.
  - Failed or Cancelled: final; the task already retried transient errors itself.
  - Running or Pending with no life sign: the worker's machine is gone. A run's life sign
    is the heartbeat of its attempt record on the shared storage (`bas.attempts`): a
    `running` record silent for `stale_after_seconds`, or no record at all
    `startup_grace_seconds` after the run's last state change, means no process is working
    on it any more. The run is marked Crashed (so the UI shows why), its attempt record
    `lost`, and it is submitted again.
  Each job is submitted again at most `resubmits` times. Resubmitting is safe: the work
  is idempotent (a finished training, image or score is skipped, outputs are written
  atomically), so a retry finishes what the lost run left and duplicates nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.states import Crashed, State
from prefect.tasks import exponential_backoff

from bas import attempts, paths, pipeline
from bas.config import Config
from bas.errors import BasError, StorageFullError, storage_full_in
from bas.pipeline import Outcome

GPU_DEPLOYMENT = "gpu"  # the deployment name of every scene flow in prefect.yaml
SCENE_FLOW_NAMES = {"train_generate": "train-generate-scene", "score": "score-scene"}


def deployment_name(stage: str) -> str:
    return f"{SCENE_FLOW_NAMES[stage]}/{GPU_DEPLOYMENT}"


def run_scene_jobs(cfg: Config, stage: str, jobs: Sequence[tuple[str, str]]) -> list[Outcome]:
    """Run the `stage` scene flow for every (method, scene_id) in `jobs`."""
    if not jobs:
        return []
    if cfg.orchestration.work_pool is None:
        outcomes = []
        for method, scene_id in jobs:
            outcomes.append(_run_here(cfg, stage, method, scene_id))
            if storage_full(outcomes):
                break
        return outcomes
    return _run_on_pool(cfg, stage, jobs)


def storage_full(outcomes: Sequence[Outcome], stage_errors: Optional[dict[str, str]] = None) -> Optional[str]:
    """The message of the first full-disk failure among `outcomes` (and whole-run stages), or None."""
    for error in [o.error for o in outcomes if not o.ok] + list((stage_errors or {}).values()):
        message = storage_full_in(error)
        if message:
            return message
    return None


def _outcome(cfg: Config, stage: str, method: str, scene_id: str, run_ids: list[str], state: State) -> Outcome:
    if state.is_completed():
        summary = pipeline.executed_summary(cfg, stage, method, scene_id, run_ids[-1])
        return Outcome(stage, method, scene_id, "completed" if summary else "cached", run_ids, None, summary)
    return Outcome(stage, method, scene_id, "failed", run_ids, f"{state.name}: {state.message}")


def _run_here(cfg: Config, stage: str, method: str, scene_id: str) -> Outcome:
    from flows.scene import SCENE_FLOWS

    state = SCENE_FLOWS[stage](config=cfg.to_dict(), method=method, scene_id=scene_id, return_state=True)
    return _outcome(cfg, stage, method, scene_id, [str(state.state_details.flow_run_id)], state)


@dataclass
class _Job:
    method: str
    scene_id: str
    run_ids: list[str] = field(default_factory=list)
    outcome: Optional[Outcome] = None


def _submit(cfg: Config, stage: str, job: _Job) -> None:
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    try:
        run = run_deployment(
            deployment_name(stage), timeout=0, flow_run_name=f"{stage} {job.method}/{job.scene_id}",
            parameters={"config": cfg.to_dict(), "method": job.method, "scene_id": job.scene_id},
            tags=["bas", stage, job.method],
        )
    except ObjectNotFound:
        raise BasError(f"no deployment {deployment_name(stage)!r} on the Prefect API "
                       f"{PREFECT_API_URL.value() or '(ephemeral: no server)'}: with orchestration.work_pool = "
                       f"{cfg.orchestration.work_pool!r}, set PREFECT_API_URL to the server and run `bas deploy` "
                       "(docs/ORCHESTRATION.md)") from None
    job.run_ids.append(str(run.id))


def orphan_reason(cfg: Config, stage: str, job: _Job, state: State, at: Optional[float] = None) -> Optional[str]:
    """Why a Running/Pending run has no process working on it any more, or None if it has."""
    orch = cfg.orchestration
    at = time.time() if at is None else at
    run_id = job.run_ids[-1]
    records = [r for r in attempts.read_attempts(paths.attempts_dir(cfg, stage, job.method, job.scene_id))
               if r.get("run_id") == run_id]
    if records and records[-1].get("status") in attempts.ALIVE:
        last = records[-1]
        if attempts.is_stale(last, orch.stale_after_seconds, at):
            return (f"attempt {last['attempt_id']} on worker {last.get('worker')} has been silent for "
                    f"{at - last['heartbeat_at']:.0f}s (orchestration.stale_after_seconds = "
                    f"{orch.stale_after_seconds:g}): its process is gone")
        return None
    if records and records[-1].get("stopped"):
        last = records[-1]
        return (f"attempt {last['attempt_id']} on worker {last.get('worker')} was stopped ({last.get('error')}): "
                "its worker got SIGTERM (scancel, preemption or a time limit)")
    # No attempt running: the run is starting, or waiting between task retries.
    since, budget = state.timestamp.timestamp(), orch.startup_grace_seconds
    if records:
        since = records[-1].get("finished_at") or records[-1]["heartbeat_at"]
        budget += sum(exponential_backoff(orch.retry_delay_seconds)(orch.retries))
    if at - since > budget:
        return (f"{state.name} for {at - since:.0f}s without an attempt running "
                f"(orchestration.startup_grace_seconds = {orch.startup_grace_seconds:g})")
    return None


def _run_on_pool(cfg: Config, stage: str, jobs: Sequence[tuple[str, str]]) -> list[Outcome]:
    orch = cfg.orchestration
    logger = get_run_logger()
    pending = [_Job(method, scene_id) for method, scene_id in jobs]
    for job in pending:
        _submit(cfg, stage, job)
    logger.info("%s: submitted %d runs of %s to work pool %r", stage, len(pending), deployment_name(stage),
                orch.work_pool)

    def again(job: _Job, why: str) -> None:
        resubmits = len(job.run_ids) - 1
        if resubmits < orch.resubmits:
            logger.warning("%s %s/%s: %s; submitting it again (%d/%d)", stage, job.method, job.scene_id, why,
                           resubmits + 1, orch.resubmits)
            _submit(cfg, stage, job)
        else:
            job.outcome = Outcome(stage, job.method, job.scene_id, "failed", list(job.run_ids),
                                  f"{why}; gave up after {resubmits} resubmits")

    last_report = ""
    with get_client(sync_client=True) as client:
        while any(job.outcome is None for job in pending):
            time.sleep(orch.poll_seconds)
            waiting = running = 0
            for job in (j for j in pending if j.outcome is None):
                state = client.read_flow_run(job.run_ids[-1]).state
                if state is None:
                    continue
                waiting += state.is_scheduled()
                running += state.is_running() or state.is_pending()
                if state.is_completed() or (state.is_final() and not state.is_crashed()):
                    job.outcome = _outcome(cfg, stage, job.method, job.scene_id, list(job.run_ids), state)
                elif state.is_crashed():
                    again(job, f"run {job.run_ids[-1]} crashed ({state.message})")
                elif state.is_running() or state.is_pending():
                    reason = orphan_reason(cfg, stage, job, state)
                    if reason:
                        client.set_flow_run_state(job.run_ids[-1], Crashed(message=f"bas: {reason}"), force=True)
                        attempts.mark_lost(paths.attempts_dir(cfg, stage, job.method, job.scene_id),
                                           job.run_ids[-1], reason)
                        again(job, f"run {job.run_ids[-1]} orphaned: {reason}")
            done = [j for j in pending if j.outcome is not None]
            report = (f"{stage}: {len(done)}/{len(pending)} finished "
                      f"({sum(1 for j in done if not j.outcome.ok)} failed), {running} running, "
                      f"{waiting} waiting for a worker of pool {orch.work_pool!r}")
            if report != last_report:
                logger.info(report)
                last_report = report
    return [job.outcome for job in pending]


def finish(cfg: Config, flow: str, outcomes: Sequence[Outcome], started: float,
           stage_errors: Optional[dict[str, str]] = None) -> dict:
    """Write, log and attach (as a Prefect artifact) the run summary; return it.

    A full disk stops the run: `summary["stopped"]` holds its one line (the CLI prints it and
    exits 2), and a summary that does not fit on the disk either is not written.
    """
    summary = pipeline.run_summary(cfg, outcomes, time.perf_counter() - started, flow=flow,
                                   stage_errors=stage_errors)
    summary["stopped"] = storage_full(outcomes, stage_errors)
    logger = get_run_logger()
    try:
        path = pipeline.write_run_summary(cfg, summary)
    except StorageFullError as err:
        logger.warning("run summary not written: %s", err)
        path = None
    text = pipeline.format_summary(summary)
    # The CLI prints the summary; the UI shows it as this run's artifact.
    logger.info("run summary: %d failure(s), written to %s", len(summary["failures"]), path)
    create_markdown_artifact(key=f"{flow.replace('_', '-')}-summary", markdown=f"```\n{text}\n```",
                             description=f"bas {flow} run summary ({path})")
    return summary
