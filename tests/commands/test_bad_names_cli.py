"""A misspelt name in params is refused by the real `bas` command in one line, before any work.

`bas -S 'orchestration.methods=["nosuch"]' run` used to start Prefect's ephemeral API, stage the
scenes and fail once a scene (hundreds of lines, a traceback a scene, exit 1); params load now
refuses it (bas.config.names): exit 2, a line naming the key and the known methods, nothing
written under the storage root, Prefect never started.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BAS = Path(sys.executable).with_name("bas")


def _bas(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "OMP_NUM_THREADS": "1"}
    env.pop("PREFECT_API_URL", None)
    started = time.monotonic()
    done = subprocess.run([str(BAS), "--params", str(REPO / "params.yaml"),
                           "-S", f"paths.storage_root={tmp_path / 'store'}", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return done, time.monotonic() - started


def test_a_misspelt_method_is_refused_in_one_line_before_any_work(tmp_path):
    done, seconds = _bas(tmp_path, "-S", 'orchestration.methods=["nosuch"]', "-S", "models.profile=tiny", "run")
    lines = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(lines) <= 5, lines
    assert lines[0].startswith("bas: error: params: orchestration.methods[0] = 'nosuch': not a method"), lines
    assert "(known: bas, " in lines[0] and "sne" in lines[0]
    assert "Traceback" not in done.stderr
    assert seconds < 10, seconds
    assert not (tmp_path / "store").exists()                  # nothing staged, recorded or written
    assert not (tmp_path / "prefect-home").exists()           # Prefect never started
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_near_miss_gets_did_you_mean(tmp_path):
    done, _ = _bas(tmp_path, "-S", "orchestration.methods=[bas, ti_mm]", "run")
    assert done.returncode == 2
    assert done.stderr.strip().endswith("did you mean 'ti_m'?"), done.stderr
    assert not (tmp_path / "store").exists()
