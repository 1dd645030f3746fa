#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, then run the whole evaluation end to end on
# the embedded defaults (tiny profile, the COCO sample or the bundled demo scenes, Prefect's
# ephemeral API, the local DVC cache) and write reports/report.html.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh

overrides=$(python scripts/demo_overrides.py)
echo "demo: params.yaml with these overrides (fewer steps and scenes, so it runs in minutes on a CPU):"
echo "  $overrides"
# shellcheck disable=SC2086  # the overrides are separate -S arguments
bas $overrides run
echo "demo: report at reports/report.html (tiny profile: random-weight models, the numbers mean nothing)"
