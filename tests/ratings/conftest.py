"""Fixtures of the ratings tests (helpers in ratings_helpers.py)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from ratings_helpers import REPO, bas_command, bas_env, free_port, make_config, make_storage_root, wait_for_http


@pytest.fixture
def storage_root(tmp_path: Path) -> Path:
    return make_storage_root(tmp_path / "store")


@pytest.fixture
def make_root():
    return make_storage_root


@pytest.fixture
def cfg_for():
    return make_config


@pytest.fixture
def live_server(tmp_path: Path):
    """Start `bas rate serve` as a real process: `start(root) -> (base_url, process)`; its
    output goes to tmp_path/server-<n>.log; every server still running is SIGKILLed at the end."""
    procs = []

    def start(root: Path) -> tuple[str, subprocess.Popen]:
        port = free_port()
        log = open(tmp_path / f"server-{len(procs)}.log", "wb")
        proc = subprocess.Popen(bas_command(root, "rate", "serve", "--run", str(root), "--port", str(port)),
                                cwd=REPO, env=bas_env(), stdout=log, stderr=subprocess.STDOUT)
        procs.append((proc, log))
        base = f"http://127.0.0.1:{port}"
        wait_for_http(base + "/", proc)
        return base, proc

    yield start
    for proc, log in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
