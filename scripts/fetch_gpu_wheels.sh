#!/usr/bin/env bash
# Wheels a lent GPU machine lacks, for scripts/gpu_session.sh (the device tool's README: its
# image has torch, transformers, timm, pandas, pyarrow, scipy, but not these). Run here, once
# per session that has a GPU; they land in .whl/, which git ignores and the device call carries.
set -euo pipefail
cd "$(dirname "$0")/.."
exclude=$(git rev-parse --git-path info/exclude)
grep -qx '/.whl/' "$exclude" 2>/dev/null || { mkdir -p "$(dirname "$exclude")"; echo '/.whl/' >> "$exclude"; }
source "${BAS_VENV:-.venv}/bin/activate"
# The versions this project is tested with, read from its own environment.
packages=(diffusers open_clip_torch ftfy wcwidth pycocotools importlib_metadata)
specs=()
for name in "${packages[@]}"; do
    specs+=("$name==$(python -m pip show "$name" | sed -n 's/^Version: //p')")
done
rm -rf .whl && mkdir .whl
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${specs[@]}"
ls -1 .whl
