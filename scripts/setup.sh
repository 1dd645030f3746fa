#!/usr/bin/env bash
# Create .venv from the pinned requirements and install bas into it. Idempotent: a second
# run with unchanged requirements does nothing but check.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.bas-requirements.sha256
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)

if [[ ! -x $VENV/bin/python ]]; then
    echo "setup: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
if [[ ! -f $STAMP || $(cat "$STAMP") != "$want" ]]; then
    echo "setup: installing pinned requirements (first time: a few minutes, ~6.5 GB)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -r requirements.txt
    "$VENV/bin/python" -m pip install -q --no-deps -e .
    echo "$want" > "$STAMP"
else
    echo "setup: $VENV is up to date"
fi

# Tools and services never phone home from this project.
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
if [[ -d .dvc ]]; then
    "$VENV/bin/dvc" config --local core.analytics false >/dev/null 2>&1 || true
fi
