"""`bas worker --idle-timeout`: the worker ends when it has had no child for the time-out, and
SIGTERM stops it with what it runs (bas.worker_process; a shell stands in for the Prefect worker)."""

import os
import signal
import subprocess
import sys
import time

from bas.worker_process import TERM_EXIT, descendants

RUNNER = [sys.executable, "-c",
          "import sys; from bas.worker_process import run_until_idle; "
          "sys.exit(run_until_idle(sys.argv[1:], dict(__import__('os').environ), 2.0, poll_seconds=0.2, "
          "term_grace_seconds=5))"]


def test_an_idle_worker_exits_after_its_last_child(tmp_path):
    # "A flow run" of 2 s, then nothing: the worker is idle from then on, for 2 s.
    started = time.monotonic()
    done = subprocess.run([*RUNNER, "bash", "-c", "sleep 2 & wait; exec sleep 60"], env={**os.environ},
                          capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "no flow run for 2s: exiting" in done.stdout
    assert 4 <= elapsed < 15  # 2 s busy + 2 s idle (+ start-up), not the 60 s sleep


def test_sigterm_stops_the_worker_and_its_flow_run(tmp_path):
    marker = tmp_path / "child.pid"
    runner = subprocess.Popen([*RUNNER, "bash", "-c", f"sleep 300 & echo $! > {marker}; wait"],
                              stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not marker.exists() or not marker.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    child = int(marker.read_text())
    assert child in descendants(runner.pid)
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=30) == TERM_EXIT
    assert "SIGTERM: stopping the worker" in runner.stdout.read()
    assert not os.path.exists(f"/proc/{child}") or open(f"/proc/{child}/stat").read().split()[2] == "Z"
