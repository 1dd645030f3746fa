"""A real Prefect server and process workers for the orchestration tests.

The server binds 127.0.0.1 on a free port with its own PREFECT_HOME (SQLite database in a
temporary directory), telemetry off. Workers are `bas worker` processes, each in its own
session so a test can kill one with everything it started (the machine "dies").
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from bas.worker_process import descendants  # noqa: F401 (slurm_harness imports it from here)

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prefect_env(home: Path, api_url: Optional[str] = None) -> dict[str, str]:
    """The environment of every process of a test session: quiet, local, fast to poll."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update({
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_HEARTBEAT_SECONDS": "5",
        "PYTHONPATH": str(REPO) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    })
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL `process`, its process group and every process it started (in any session)."""
    victims = descendants(process.pid)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=30)


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the process group, then SIGKILL what is left of the tree."""
    if process.poll() is None:
        victims = descendants(process.pid)
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        for pid in [process.pid, *victims]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if process.poll() is None:
        process.wait(timeout=timeout)


@dataclass
class PrefectServer:
    home: Path
    port: int
    process: subprocess.Popen
    log: Path
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def env(self) -> dict[str, str]:
        return prefect_env(self.home, self.api_url)

    def start_worker(self, name: str, params: Path, overrides: list[str], log_dir: Path) -> subprocess.Popen:
        args = [sys.executable, "-m", "bas.cli", "--params", str(params)]
        for item in overrides:
            args += ["-S", item]
        args += ["worker", "--name", name, "--project-dir", str(REPO)]
        log = open(log_dir / f"worker-{name}.log", "a")
        process = subprocess.Popen(args, cwd=REPO, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.workers[name] = process
        return process

    def stop_workers(self) -> None:
        for process in self.workers.values():
            stop(process)
        self.workers.clear()


def start_server(home: Path, timeout: float = 180) -> PrefectServer:
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = home / "server.log"
    env = prefect_env(home)
    env["PREFECT_UI_ENABLED"] = "false"
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        cwd=home, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    server = PrefectServer(home, port, process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{server.api_url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    stop(process)
    raise RuntimeError(f"prefect server did not answer within {timeout}s:\n{log.read_text()[-3000:]}")


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on `port` (from /proc/net/tcp)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, state = parts[1], parts[3]
            address, port_hex = local.rsplit(":", 1)
            if state == "0A" and int(port_hex, 16) == port:  # 0A = LISTEN
                if len(address) == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                else:
                    raw = bytes.fromhex(address)
                    found.add(socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))))
    return found
