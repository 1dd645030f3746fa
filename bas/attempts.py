"""Attempt records: one JSON file per execution of a scene stage, kept alive while it runs.

An attempt record says who ran a (stage, method, scene): host, pid, worker name, the run id
the orchestrator gave it; when it started, when it last showed life (`heartbeat_at`,
rewritten every `orchestration.heartbeat_seconds` by a background thread) and how it ended,
with the stage's summary. They live under `<root>/records/attempts/` on the shared storage,
outside every DVC output, so writing them never changes a stage's outputs.

Readers: full_eval tells a live run from one whose machine is gone (a `running` record whose
heartbeat is older than `orchestration.stale_after_seconds`), the run summary reports hosts
and device time, and the tests check that every scene completed exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from bas.errors import StorageFullError
from bas.io import atomic_write_json

WORKER_ENV = "BAS_WORKER_NAME"  # set on a worker machine to name it in the records

RUNNING, COMPLETED, FAILED = "running", "completed", "failed"
# A run waiting for another run's lease on the same (stage, method, scene) (`bas.lease`):
# alive (it beats) but doing nothing; `waited` when the other run finished the work for it.
WAITING, WAITED = "waiting", "waited"
ALIVE = (RUNNING, WAITING)


def now() -> float:
    return time.time()


def worker_name() -> str:
    return os.environ.get(WORKER_ENV) or socket.gethostname()


@dataclass
class Attempt:
    path: Path
    data: dict[str, Any]
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def write(self, **changes: Any) -> None:
        with self._lock:
            self.data.update(changes)
            atomic_write_json(self.path, self.data)

    def beat(self) -> None:
        self.write(heartbeat_at=now())


def _heartbeat(attempt: Attempt, seconds: float, stop: threading.Event) -> None:
    while not stop.wait(seconds):
        try:
            attempt.beat()
        except OSError:  # shared storage hiccup: the next beat tries again
            pass


@contextlib.contextmanager
def attempt(directory: str | Path, stage: str, method: str, scene_id: str, heartbeat_seconds: float,
            run_id: Optional[str] = None, status: str = RUNNING, done_status: str = COMPLETED,
            **fields: Any) -> Iterator[Attempt]:
    """Record one execution in `directory`; the caller sets `attempt.data["summary"]`.

    The record is `running` while the body runs (heartbeat every `heartbeat_seconds`),
    `completed` when it returns and `failed` (with the error) when it raises.
    """
    started = now()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started))
    attempt_id = f"{stamp}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    record = Attempt(Path(directory) / f"{attempt_id}.json", {
        "attempt_id": attempt_id, "stage": stage, "method": method, "scene_id": scene_id,
        "run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(), "worker": worker_name(),
        "status": status, "started_at": started, "heartbeat_at": started, "finished_at": None,
        "summary": None, "error": None, **fields,
    })
    record.write()
    stop = threading.Event()
    beater = threading.Thread(target=_heartbeat, args=(record, heartbeat_seconds, stop), daemon=True,
                              name=f"heartbeat-{stage}-{scene_id}")
    beater.start()
    try:
        yield record
    except BaseException as err:
        stop.set()
        beater.join()
        # Not an Exception: a signal (SIGTERM: scancel, preemption) or an interrupt ended the
        # process; no task retry follows, so the run is lost at once (flows/dispatch.py).
        try:
            record.write(status=FAILED, finished_at=now(), heartbeat_at=now(), error=f"{type(err).__name__}: {err}",
                         stopped=not isinstance(err, Exception))
        except (OSError, StorageFullError):   # the disk that failed the stage may fail its record too:
            pass                              # the stage's own error is the one to report
        raise
    stop.set()
    beater.join()
    record.write(status=done_status, finished_at=now(), heartbeat_at=now())


def read_attempts(directory: str | Path) -> list[dict[str, Any]]:
    """Every attempt record in `directory`, oldest first (unreadable files are skipped)."""
    records = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):  # a record being replaced right now: atomic, so rare
            continue
    return sorted(records, key=lambda r: r.get("started_at", 0.0))


def is_stale(record: dict[str, Any], stale_after_seconds: float, at: Optional[float] = None) -> bool:
    """A running record whose heartbeat is older than `stale_after_seconds`: its process is gone."""
    at = now() if at is None else at
    return record.get("status") in ALIVE and at - record.get("heartbeat_at", 0.0) > stale_after_seconds


LOST = "lost"


def mark_lost(directory: str | Path, run_id: str, reason: str) -> list[str]:
    """Mark the `running` records of run `run_id` as lost (their process is gone); their ids."""
    marked = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("run_id") == run_id and record.get("status") in ALIVE:
            record.update(status=LOST, error=reason, finished_at=now())
            atomic_write_json(path, record)
            marked.append(record["attempt_id"])
    return marked
