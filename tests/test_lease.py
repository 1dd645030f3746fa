"""Cross-run leases (bas.lease): exclusive, kept alive by a heartbeat, taken over when stale."""

import os
import threading
import time

from bas import attempts, lease, paths
from tests import params_defaults


def _cfg(tmp_path, stale=3.0):
    return params_defaults.parse({"paths": {"storage_root": str(tmp_path)},
                         "orchestration": {"heartbeat_seconds": 0.2, "stale_after_seconds": stale}})


def test_a_held_lease_is_not_taken_until_released(tmp_path):
    path = tmp_path / "l.json"
    first = lease.try_acquire(path, 10)
    assert first is not None and first.owned()
    assert lease.try_acquire(path, 10) is None
    first.release()
    second = lease.try_acquire(path, 10)
    assert second is not None and second.holder["lease_id"] != first.holder["lease_id"]


def test_a_silent_lease_is_taken_over_and_its_old_holder_no_longer_owns_it(tmp_path):
    path = tmp_path / "l.json"
    dead = lease.try_acquire(path, 5)
    old = time.time() - 6
    os.utime(path, (old, old))  # its holder stopped beating 6 s ago
    taker = lease.try_acquire(path, 5)
    assert taker is not None and taker.owned() and not dead.owned()
    dead.release()  # a late release of the dead holder leaves the new lease alone
    assert path.exists() and taker.owned()
    assert [p.name for p in tmp_path.iterdir()] == ["l.json"]


def test_a_second_run_waits_beating_then_sees_it_waited(tmp_path):
    cfg = _cfg(tmp_path)
    order, waited = [], {}
    holding = threading.Event()

    def first():
        with lease.hold(cfg, "train_generate", "bas", "s1", run_id="r1"):
            holding.set()
            time.sleep(1.5)  # several heartbeats
            order.append("first done")

    def second():
        holding.wait()
        with lease.hold(cfg, "train_generate", "bas", "s1", run_id="r2") as did_wait:
            waited["r2"] = did_wait
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    time.sleep(0.8)
    records = attempts.read_attempts(paths.attempts_dir(cfg, "train_generate", "bas", "s1"))
    assert [(r["run_id"], r["status"]) for r in records] == [("r2", attempts.WAITING)]
    assert not attempts.is_stale(records[0], cfg.orchestration.stale_after_seconds)
    for t in threads:
        t.join(timeout=20)
    assert order == ["first done", "second in"] and waited == {"r2": True}
    [record] = attempts.read_attempts(paths.attempts_dir(cfg, "train_generate", "bas", "s1"))
    assert record["status"] == attempts.WAITED
    assert not lease.lease_path(cfg, "train_generate", "bas", "s1").exists()


def test_the_heartbeat_keeps_a_long_holder_past_stale_after(tmp_path):
    cfg = _cfg(tmp_path, stale=1.0)
    with lease.hold(cfg, "score", "bas", "s1"):
        time.sleep(2.0)  # twice stale_after: only the heartbeat keeps it
        assert lease.try_acquire(lease.lease_path(cfg, "score", "bas", "s1"), 1.0) is None


def test_a_lease_that_could_not_be_written_is_not_left_behind(tmp_path, monkeypatch):
    import errno

    import pytest

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lease.os, "fsync", full)
    with pytest.raises(OSError):
        lease.try_acquire(tmp_path / "l.json", 10)
    assert not (tmp_path / "l.json").exists()   # an empty lease would hold the work off until stale
