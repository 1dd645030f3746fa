#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, then run the whole evaluation end to end on
# the embedded defaults and write reports/report.html.
#
#   bash scripts/demo.sh           # the sandbox profile: bas's own trained models, real numbers
#   bash scripts/demo.sh tiny      # random-weight tiny models: a machinery smoke run
#
# Both use the embedded data (the sandbox world, or for tiny the COCO sample in
# ../shared/coco-sample / the bundled demo scenes), Prefect's ephemeral API and the local DVC cache.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-sandbox}
bash scripts/setup.sh
source scripts/env.sh

mapfile -t overrides < <(python scripts/demo_overrides.py "$profile")
echo "demo ($profile profile): params.yaml with these overrides:"
printf '  %s %s\n' "${overrides[@]}"
bas "${overrides[@]}" run
if [[ $profile == tiny ]]; then
    echo "demo: report at reports/report.html (tiny profile: random-weight models, the numbers mean nothing)"
else
    echo "demo: report at reports/report.html (sandbox profile: models trained by bas on its sandbox world)"
fi
