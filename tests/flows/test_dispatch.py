"""Orphan detection of the pool fan-out, on records written by hand (no server needed)."""

import json
from pathlib import Path
from datetime import datetime, timezone

from prefect.states import Pending, Running

from bas import paths
from tests import params_defaults
from flows.dispatch import _Job, deployment_name, orphan_reason


def _cfg(tmp_path):
    return params_defaults.parse({"paths": {"storage_root": str(tmp_path)},
                         "orchestration": {"heartbeat_seconds": 1, "stale_after_seconds": 10,
                                           "startup_grace_seconds": 60, "retries": 2, "retry_delay_seconds": 5}})


def _record(cfg, run_id, status, heartbeat_at, finished_at=None, name="a"):
    directory = paths.attempts_dir(cfg, "train_generate", "bas", "s1")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps({
        "attempt_id": name, "run_id": run_id, "status": status, "worker": "w1",
        "started_at": heartbeat_at - 1, "heartbeat_at": heartbeat_at, "finished_at": finished_at}))


def _state(kind, seconds_ago, at):
    state = kind()
    state.timestamp = datetime.fromtimestamp(at - seconds_ago, tz=timezone.utc)
    return state


def test_running_attempt_is_orphaned_only_when_its_heartbeat_is_stale(tmp_path):
    cfg, at = _cfg(tmp_path), 10_000.0
    job = _Job("bas", "s1", run_ids=["old", "r1"])
    _record(cfg, "r1", "running", heartbeat_at=at - 5)
    assert orphan_reason(cfg, "train_generate", job, _state(Running, 100, at), at=at) is None
    _record(cfg, "r1", "running", heartbeat_at=at - 11)
    reason = orphan_reason(cfg, "train_generate", job, _state(Running, 100, at), at=at)
    assert "silent for 11s" in reason and "w1" in reason


def test_records_of_other_runs_do_not_count(tmp_path):
    cfg, at = _cfg(tmp_path), 10_000.0
    _record(cfg, "someone-else", "running", heartbeat_at=at)  # alive, but another run's
    job = _Job("bas", "s1", run_ids=["r1"])
    assert orphan_reason(cfg, "train_generate", job, _state(Pending, 30, at), at=at) is None
    assert "without an attempt running" in orphan_reason(cfg, "train_generate", job, _state(Pending, 61, at), at=at)


def test_waiting_between_task_retries_gets_the_backoff_on_top_of_the_grace(tmp_path):
    cfg, at = _cfg(tmp_path), 10_000.0
    job = _Job("bas", "s1", run_ids=["r1"])
    # 2 retries with backoff 5 s: 5 + 10 = 15 s on top of the 60 s grace.
    _record(cfg, "r1", "failed", heartbeat_at=at - 70, finished_at=at - 70)
    assert orphan_reason(cfg, "train_generate", job, _state(Running, 200, at), at=at) is None
    _record(cfg, "r1", "failed", heartbeat_at=at - 76, finished_at=at - 76)
    assert orphan_reason(cfg, "train_generate", job, _state(Running, 200, at), at=at) is not None


def test_deployment_names_match_prefect_yaml():
    import yaml

    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "prefect.yaml").read_text())
    entries = {(d["entrypoint"].split(":")[1], d["name"]) for d in spec["deployments"]}
    assert ("train_generate_scene", "gpu") in entries and ("score_scene", "gpu") in entries
    assert deployment_name("train_generate") == "train-generate-scene/gpu"
    assert deployment_name("score") == "score-scene/gpu"


def test_a_run_whose_attempt_was_stopped_by_a_signal_is_orphaned_at_once(tmp_path):
    cfg, at = _cfg(tmp_path), 10_000.0
    job = _Job("bas", "s1", run_ids=["r1"])
    directory = paths.attempts_dir(cfg, "train_generate", "bas", "s1")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "a.json").write_text(json.dumps({
        "attempt_id": "a", "run_id": "r1", "status": "failed", "worker": "slurm-7_1", "started_at": at - 10,
        "heartbeat_at": at - 1, "finished_at": at - 1, "error": "TerminationSignal: SIGTERM", "stopped": True}))
    reason = orphan_reason(cfg, "train_generate", job, _state(Running, 100, at), at=at)
    assert "stopped" in reason and "slurm-7_1" in reason
