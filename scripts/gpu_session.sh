#!/usr/bin/env bash
# Everything bas wants from a lent GPU, as one command of under ten minutes (the device tool's
# limit per command; a session has fifteen minutes of device time in all, start-up included):
#   1. the GPU benchmark, full-size SD 2.1 architecture, random weights, bf16 (bench/gpu.py --quick);
#   2. the sandbox base model trained on the GPU for the time that is left
#      (scripts/sandbox_gpu_train.py), with its validity measured there.
# Prepare here:  bash scripts/fetch_gpu_wheels.sh
# Run there:     device run(command="bash scripts/gpu_session.sh", carry=[".whl"], timeout_s=590)
# Back here, under the run's files: bench.jsonl (append to bench/results.jsonl),
# diffusion.tar.part-* (cat them | tar -x -C <sandbox weights dir>), training_record.json, logs.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-session-out}
mkdir -p "$OUT"
BUDGET_S=${BUDGET_S:-560}          # the whole command, inside the device call's 590 s
BENCH_S=${BENCH_S:-200}            # at most this for the benchmark
started=$(date +%s)

if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 DO_NOT_TRACK=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

# 1. Benchmark: its records are appended to bench/results.jsonl there; bring back the new lines.
lines_before=$(wc -l < bench/results.jsonl)
timeout "$BENCH_S" python3 bench/gpu.py --quick > "$OUT/bench.log" 2>&1
echo "bench exit $? after $(( $(date +%s) - started )) s"
tail -n +"$((lines_before + 1))" bench/results.jsonl > "$OUT/bench.jsonl"
wc -l "$OUT/bench.jsonl"

# 2. Sandbox base model, in the time left.
left=$(( BUDGET_S - ($(date +%s) - started) ))
echo "sandbox: $left s left"
python3 scripts/sandbox_gpu_train.py --budget-s "$left" --out /tmp/sandbox-gpu --pack "$OUT" \
    > "$OUT/sandbox.log" 2>&1
echo "sandbox exit $? after $(( $(date +%s) - started )) s"
grep -E '^\{|^repeat|^packed' "$OUT/sandbox.log"
tail -n 5 "$OUT/sandbox.log"
