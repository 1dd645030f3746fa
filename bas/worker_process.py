"""A Prefect worker run as a child that ends when idle or when this process gets SIGTERM.

`bas worker --idle-timeout S` (the Slurm jobs of `bas slurm submit`) runs
`prefect worker start` under `run_until_idle`: a process worker starts one child process per
flow run, so "no child process for S seconds" is "no flow run for S seconds"; the worker is
then stopped and this process exits 0, handing the GPU back. A SIGTERM (scancel, preemption,
Slurm's --signal before the time limit) is passed to the worker and to the flow run it runs:
Prefect's engine ends the run as Crashed, the dispatcher of the full evaluation submits it
again (flows/dispatch.py), and this process exits 143 once they are gone.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)

TERM_EXIT = 128 + signal.SIGTERM


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":  # a zombie runs nothing
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal_all(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def run_until_idle(command: Sequence[str], env: dict[str, str], idle_seconds: float,
                   poll_seconds: float = 2.0, term_grace_seconds: float = 60.0) -> int:
    """Run `command` (a Prefect worker) until it has had no child for `idle_seconds`."""
    terminated = []
    signal.signal(signal.SIGTERM, lambda *_: terminated.append(True))
    worker = subprocess.Popen(list(command), env=env)
    idle_since = time.monotonic()
    while worker.poll() is None and not terminated:
        time.sleep(poll_seconds)
        if descendants(worker.pid):
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > idle_seconds:
            log.info("worker idle for %.0fs (--idle-timeout %g): stopping it", time.monotonic() - idle_since,
                     idle_seconds)
            print(f"bas worker: no flow run for {idle_seconds:g}s: exiting", flush=True)
            _stop(worker, term_grace_seconds)
            return 0
    if terminated:
        print("bas worker: SIGTERM: stopping the worker and its flow run", flush=True)
        _stop(worker, term_grace_seconds)
        return TERM_EXIT
    return worker.returncode


def _stop(worker: subprocess.Popen, grace_seconds: float) -> None:
    """SIGTERM the worker and every flow run process below it; SIGKILL what outlives the grace."""
    victims = [worker.pid, *descendants(worker.pid)]
    _signal_all(victims, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in victims):
        worker.poll()
        time.sleep(0.5)
    _signal_all([pid for pid in victims if _alive(pid)], signal.SIGKILL)
    worker.wait()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
