"""The environment every bas process runs in, set by bas itself before Prefect is imported.

Prefect reads its settings from the environment once, when it is imported; the Hugging Face
libraries and DVC read theirs when they start. So `import bas` (the first import of the `bas`
console command, of `python -m bas...`, of the flows and tasks) sets these defaults first, and
every process bas starts (Prefect's ephemeral API server, a worker, a flow run, dvc) inherits
them. A variable the user set to a non-empty value is kept.

`bas env` prints them as `export` lines, for a shell that runs Prefect itself
(`eval "$(bas env)"; prefect server start`).
"""

from __future__ import annotations

import os

DEFAULTS: dict[str, str] = {
    # Prefect's server analytics: its telemetry heartbeat writes to the ephemeral API's SQLite
    # database and, on a busy machine, fails with "database is locked".
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",  # the shared opt-out that Prefect and other tools read
    # Prefect's default (20 s) is too short for the ephemeral API on a busy machine: "Timed out
    # while attempting to connect to ephemeral Prefect API server".
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # A Prefect server listens on loopback unless the user sets another address on purpose.
    "PREFECT_SERVER_API_HOST": "127.0.0.1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    # tokenizers warns and turns its thread pool off in every process forked after it ran.
    "TOKENIZERS_PARALLELISM": "false",
    "DVC_NO_ANALYTICS": "1",  # also off in .dvc/config; this covers dvc run from another checkout
}


def apply_defaults(environ: "os._Environ[str] | dict[str, str]" = os.environ) -> dict[str, str]:
    """Set each of DEFAULTS the environment lacks (or holds empty); returns the ones it set."""
    applied = {}
    for name, value in DEFAULTS.items():
        if not environ.get(name):
            environ[name] = applied[name] = value
    return applied


# What this process's import set (the rest were the user's).
APPLIED = apply_defaults()
