"""Cross-run leases: one process at a time works on a (stage, method, scene), across runs.

Attempt records (`bas.attempts`) let one run tell a live worker from a dead one; nothing in
them stops two runs (a cron-scheduled evaluation and a manual one, two users on one storage
root) from training the same (method, scene) side by side. A lease does: a file
`<root>/records/leases/<stage>/<method>/<scene_id>.json` created with O_EXCL (atomic on a
local filesystem and on NFSv3+), whose modification time the holder touches every
`orchestration.heartbeat_seconds`. A lease untouched for `orchestration.stale_after_seconds`
belongs to a process that is gone: the next taker renames it aside (one rename wins) and
creates its own.

A run that finds the lease held waits (its attempt record says `waiting`, and beats, so the
pool's orphan check sees it alive), then takes the lease and looks again: when the holder
finished the work, the stage is skipped; when the holder died, the waiter does the work,
resuming from what the holder saved.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator, Optional

from bas import attempts, paths
from bas.config import Config

log = logging.getLogger(__name__)


def lease_path(cfg: Config, stage: str, method: str, scene_id: str) -> Path:
    return paths.records_dir(cfg) / "leases" / stage / method / f"{scene_id}.json"


def _age(path: Path) -> Optional[float]:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # being created or removed right now
        return {}


class Lease:
    """A held lease; `beat()` keeps it, `release()` gives it up."""

    def __init__(self, path: Path, holder: dict):
        self.path, self.holder = path, holder

    def owned(self) -> bool:
        return _read(self.path).get("lease_id") == self.holder["lease_id"]

    def beat(self) -> None:
        os.utime(self.path)

    def release(self) -> None:
        if self.owned():
            self.path.unlink(missing_ok=True)


def try_acquire(path: Path, stale_after_seconds: float, **holder: object) -> Optional[Lease]:
    """Take the lease at `path` if it is free or stale; None while a live process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mine = {"lease_id": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(),
            "worker": attempts.worker_name(), "acquired_at": time.time(), **holder}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            age = _age(path)
            if age is None:  # released between the two calls: try again
                continue
            if age <= stale_after_seconds:
                return None
            # Silent past the limit: its holder is gone. Rename it aside; of several takers
            # only one rename finds the file, the others see it gone and race on O_EXCL.
            stale = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
            try:
                os.rename(path, stale)
            except FileNotFoundError:
                continue
            log.warning("lease %s: holder %s silent for %.0fs; taking it over", path,
                        _read(stale).get("worker"), age)
            stale.unlink(missing_ok=True)
            continue
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(mine, handle)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            # Not written (a full disk): an empty lease would hold the work off until it went stale.
            path.unlink(missing_ok=True)
            raise
        return Lease(path, mine)
    return None


def _keep(lease: Lease, seconds: float, stop: threading.Event) -> None:
    while not stop.wait(seconds):
        try:
            lease.beat()
        except FileNotFoundError:
            log.error("lease %s vanished while held (taken over after a stall?)", lease.path)
        except OSError:  # shared storage hiccup: the next beat tries again
            pass


@contextlib.contextmanager
def hold(cfg: Config, stage: str, method: str, scene_id: str, run_id: Optional[str] = None,
         poll_seconds: Optional[float] = None) -> Iterator[bool]:
    """Hold the (stage, method, scene) lease for the body; yields whether it had to wait.

    While another live process holds it, a `waiting` attempt record is kept (ended as
    `waited`), so the wait is visible and is not mistaken for a lost run.
    """
    orch = cfg.orchestration
    path = lease_path(cfg, stage, method, scene_id)
    poll = poll_seconds or min(orch.heartbeat_seconds, 5.0)
    lease = try_acquire(path, orch.stale_after_seconds, stage=stage, method=method, scene_id=scene_id,
                        run_id=run_id)
    waited = lease is None
    if lease is None:
        holder = _read(path)
        log.info("%s %s/%s: run %s on %s is doing it; waiting for its lease %s", stage, method, scene_id,
                 holder.get("run_id"), holder.get("worker"), path)
        with attempts.attempt(paths.attempts_dir(cfg, stage, method, scene_id), stage, method, scene_id,
                              orch.heartbeat_seconds, run_id, status=attempts.WAITING,
                              done_status=attempts.WAITED, waiting_for=holder.get("lease_id")):
            while lease is None:
                time.sleep(poll)
                lease = try_acquire(path, orch.stale_after_seconds, stage=stage, method=method,
                                    scene_id=scene_id, run_id=run_id)
    stop = threading.Event()
    keeper = threading.Thread(target=_keep, args=(lease, orch.heartbeat_seconds, stop), daemon=True,
                              name=f"lease-{stage}-{scene_id}")
    keeper.start()
    try:
        yield waited
    finally:
        stop.set()
        keeper.join()
        lease.release()
