#!/usr/bin/env bash
# Wheels of the packages bas needs beyond torch, transformers, timm, pandas, pyarrow and scipy,
# for scripts/gpu_bench_and_train.sh on a GPU machine that has those but no network access.
# Run it where there is a network, beside bas's environment (.venv, or $BAS_VENV), whose versions
# it fetches; the wheels (CPython 3.12, x86_64 Linux) land in .whl/, which git ignores; copy .whl/
# into the checkout on the GPU machine.
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
