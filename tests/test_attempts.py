import json
import time

import pytest

from bas import attempts


def test_attempt_record_lifecycle_and_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setenv(attempts.WORKER_ENV, "gpu-7")
    with attempts.attempt(tmp_path, "train_generate", "bas", "scene-a", heartbeat_seconds=0.05,
                          run_id="run-1") as record:
        first = json.loads(record.path.read_text())
        assert first["status"] == attempts.RUNNING and first["worker"] == "gpu-7"
        deadline = time.monotonic() + 5
        while json.loads(record.path.read_text())["heartbeat_at"] == first["heartbeat_at"]:
            assert time.monotonic() < deadline, "the heartbeat never rewrote the record"
            time.sleep(0.02)
        record.data["summary"] = {"images": 3}
    [done] = attempts.read_attempts(tmp_path)
    assert done["status"] == attempts.COMPLETED
    assert done["summary"] == {"images": 3} and done["run_id"] == "run-1"
    assert done["finished_at"] >= done["started_at"]


def test_failed_attempt_keeps_the_error(tmp_path):
    with pytest.raises(ValueError):
        with attempts.attempt(tmp_path, "score", "bas", "s", heartbeat_seconds=10):
            raise ValueError("disk on fire")
    [failed] = attempts.read_attempts(tmp_path)
    assert failed["status"] == attempts.FAILED
    assert failed["error"] == "ValueError: disk on fire"


def test_stale_only_when_running_and_silent():
    record = {"status": attempts.RUNNING, "heartbeat_at": 100.0}
    assert attempts.is_stale(record, 10, at=111.0)
    assert not attempts.is_stale(record, 10, at=109.0)
    assert not attempts.is_stale({**record, "status": attempts.COMPLETED}, 10, at=500.0)


def test_mark_lost_touches_only_the_running_records_of_that_run(tmp_path):
    for run_id, status in (("a", attempts.RUNNING), ("a", attempts.FAILED), ("b", attempts.RUNNING)):
        path = tmp_path / f"{run_id}-{status}.json"
        path.write_text(json.dumps({"attempt_id": path.stem, "run_id": run_id, "status": status,
                                    "started_at": 1.0, "heartbeat_at": 1.0}))
    assert attempts.mark_lost(tmp_path, "a", "worker gone") == ["a-running"]
    statuses = {r["attempt_id"]: r["status"] for r in attempts.read_attempts(tmp_path)}
    assert statuses == {"a-running": attempts.LOST, "a-failed": attempts.FAILED, "b-running": attempts.RUNNING}


def test_an_attempt_ended_by_a_signal_is_marked_stopped(tmp_path):
    class TerminationSignal(BaseException):  # what Prefect raises in a flow run on SIGTERM
        pass

    with pytest.raises(ValueError):
        with attempts.attempt(tmp_path / "a", "score", "bas", "s", heartbeat_seconds=10):
            raise ValueError("an ordinary error: the task may retry")
    with pytest.raises(TerminationSignal):
        with attempts.attempt(tmp_path / "b", "score", "bas", "s", heartbeat_seconds=10):
            raise TerminationSignal("SIGTERM")
    [failed], [stopped] = attempts.read_attempts(tmp_path / "a"), attempts.read_attempts(tmp_path / "b")
    assert failed["stopped"] is False and stopped["stopped"] is True
    assert stopped["status"] == attempts.FAILED and stopped["error"] == "TerminationSignal: SIGTERM"


def test_a_record_the_full_disk_refuses_does_not_hide_the_stages_error(tmp_path, monkeypatch):
    from bas.errors import StorageFullError

    with pytest.raises(ValueError, match="the stage's own error"):
        with attempts.attempt(tmp_path, "score", "bas", "s", heartbeat_seconds=10) as record:
            def full(*args, **kwargs):
                raise StorageFullError(record.path, "no space left on device", 0, 100)
            monkeypatch.setattr(attempts, "atomic_write_json", full)
            raise ValueError("the stage's own error")
