"""bas sets its own environment (bas.environment) before Prefect is imported; a user's value is kept.

Without PREFECT_SERVER_ANALYTICS_ENABLED=false and the ephemeral API's startup timeout, `bas run`
on a busy machine failed with "Timed out while attempting to connect to ephemeral Prefect API
server" and a "database is locked" traceback from Prefect's telemetry heartbeat; these used to
come only from `source scripts/env.sh`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bas.environment import DEFAULTS, apply_defaults

REPO = Path(__file__).resolve().parents[1]
BAS = Path(sys.executable).with_name("bas")


def _bare_env(**user: str) -> dict[str, str]:
    """This environment without any variable bas sets, plus `user`'s own values."""
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS and not k.startswith("PREFECT_")}
    return {**env, "OMP_NUM_THREADS": "1", **user}


def test_apply_defaults_sets_what_is_missing_or_empty_and_keeps_the_rest():
    environ = {"DO_NOT_TRACK": "0", "PREFECT_SERVER_API_HOST": ""}
    applied = apply_defaults(environ)
    assert environ == {**DEFAULTS, "DO_NOT_TRACK": "0"}
    assert set(applied) == set(DEFAULTS) - {"DO_NOT_TRACK"}


def test_the_bas_command_runs_in_its_environment_and_keeps_the_users_values(tmp_path):
    done = subprocess.run([str(BAS), "env"], env=_bare_env(PREFECT_SERVER_API_HOST="10.0.0.5"), cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(DEFAULTS)
    for name, value in DEFAULTS.items():
        if name == "PREFECT_SERVER_API_HOST":
            assert "export PREFECT_SERVER_API_HOST=10.0.0.5  # yours" in lines
        else:
            assert f"export {name}={value}  # bas default" in lines
    # what `bas env` prints, a shell can take
    shell = subprocess.run(["bash", "-c", f'eval "$({BAS} env)"; echo "$PREFECT_SERVER_ANALYTICS_ENABLED $DVC_NO_ANALYTICS"'],
                           env=_bare_env(), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert shell.stdout.strip() == "false 1", shell.stderr


PROBE = """
import json, os, subprocess, sys
import {first}
import prefect.settings
s = prefect.settings.get_current_settings()
child = subprocess.run([sys.executable, "-c", "import os, json; print(json.dumps(dict(os.environ)))"],
                       capture_output=True, text=True).stdout
print(json.dumps({{"analytics": s.server.analytics_enabled, "timeout": s.server.ephemeral.startup_timeout_seconds,
                  "host": s.server.api.host, "child": json.loads(child)}}))
"""


def test_prefect_reads_them_after_bas_is_imported_and_children_inherit_them():
    for first in ("bas.cli", "flows.full_eval", "tasks.stages"):
        done = subprocess.run([sys.executable, "-c", PROBE.format(first=first)], env=_bare_env(), cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout.splitlines()[-1])
        assert (seen["analytics"], seen["timeout"], seen["host"]) == (False, 120, "127.0.0.1"), first
        assert {k: seen["child"].get(k) for k in DEFAULTS} == DEFAULTS, first


def test_a_users_prefect_setting_is_kept():
    done = subprocess.run([sys.executable, "-c", PROBE.format(first="bas")], cwd=REPO, timeout=300,
                          env=_bare_env(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="300",
                                        PREFECT_SERVER_API_HOST="10.0.0.5"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert (seen["analytics"], seen["timeout"], seen["host"]) == (False, 300, "10.0.0.5")


def test_env_sh_only_puts_the_venv_on_path():
    done = subprocess.run(["bash", "-c", "source scripts/env.sh && env"], env=_bare_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    env = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    assert env["PATH"].split(":")[0] == str(REPO / ".venv" / "bin")
    assert not set(DEFAULTS) & set(env)       # bas sets those itself
