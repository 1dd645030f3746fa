#!/usr/bin/env bash
# Run the GPU benchmarks and the sandbox training on a GPU in one command, within a time budget:
#   1. the GPU benchmark, full-size SD 2.1 architecture, random weights, bf16 (bench/gpu.py --quick),
#      for at most --bench-s seconds;
#   2. the sandbox base model trained on the GPU for the time that is left
#      (scripts/sandbox_train_gpu.py), with its validity measured there.
#
#   bash scripts/gpu_bench_and_train.sh [--budget-s 560] [--bench-s 200] [--out DIR] [--weights DIR]
#
# Run it in a checkout on the GPU machine, with bas's environment active (it uses python3 from
# PATH). A GPU machine that has torch but neither network access nor bas's other packages: run
# scripts/fetch_gpu_wheels.sh where there is a network and copy .whl/ into the checkout; those
# wheels are installed into /tmp/site first. Written to --out: gpu.txt, bench.log, bench.jsonl
# (the benchmark's new records, also appended to this checkout's bench/results.jsonl),
# sandbox.log, training_record.json and diffusion.tar.part-* (the new base model, to copy
# elsewhere: cat them | tar -x -C <sandbox weights dir>). The models trained are in --weights.
set -uo pipefail   # no -e: a failed benchmark still leaves the training its time
USAGE="usage: bash scripts/gpu_bench_and_train.sh [--budget-s SECONDS] [--bench-s SECONDS] [--out DIR] [--weights DIR]
  --budget-s  seconds for the whole command: benchmark, training, validity, packing (default 560; env BUDGET_S)
  --bench-s   at most this many seconds for the benchmark (default 200; env BENCH_S)
  --out       folder for the logs, benchmark records and packed model (default /tmp/gpu-bench-and-train; env OUT)
  --weights   sandbox weights directory the training writes (default /tmp/sandbox-gpu)"
OUT=${OUT:-/tmp/gpu-bench-and-train}
BUDGET_S=${BUDGET_S:-560}
BENCH_S=${BENCH_S:-200}
WEIGHTS=/tmp/sandbox-gpu
while [ $# -gt 0 ]; do
    case $1 in
        -h|--help) echo "$USAGE"; exit 0 ;;
        --budget-s|--bench-s|--out|--weights)
            [ $# -ge 2 ] || { echo "gpu_bench_and_train.sh: $1 needs a value" >&2; exit 2; }
            case $1 in
                --budget-s) BUDGET_S=$2 ;;
                --bench-s) BENCH_S=$2 ;;
                --out) OUT=$2 ;;
                --weights) WEIGHTS=$2 ;;
            esac
            shift 2 ;;
        *) echo "gpu_bench_and_train.sh: unknown argument '$1'" >&2; echo "$USAGE" >&2; exit 2 ;;
    esac
done
for name in BUDGET_S BENCH_S; do
    [[ ${!name} =~ ^[0-9]+$ ]] || {
        echo "gpu_bench_and_train.sh: --$(tr 'A-Z_' 'a-z-' <<< "$name") '${!name}': not a whole number of seconds" >&2
        exit 2
    }
done
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
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

# 1. Benchmark: bench/gpu.py appends its records to bench/results.jsonl; the new lines are also
# copied to the output folder, for keeping them with the results of another checkout.
lines_before=$(wc -l < bench/results.jsonl)
timeout "$BENCH_S" python3 bench/gpu.py --quick > "$OUT/bench.log" 2>&1
echo "bench exit $? after $(( $(date +%s) - started )) s"
tail -n +"$((lines_before + 1))" bench/results.jsonl > "$OUT/bench.jsonl"
wc -l "$OUT/bench.jsonl"

# 2. Sandbox base model, in the time left.
left=$(( BUDGET_S - ($(date +%s) - started) ))
echo "sandbox: $left s left"
python3 scripts/sandbox_train_gpu.py --budget-s "$left" --out "$WEIGHTS" --pack "$OUT" \
    > "$OUT/sandbox.log" 2>&1
echo "sandbox exit $? after $(( $(date +%s) - started )) s"
grep -E '^\{|^repeat|^packed' "$OUT/sandbox.log"
tail -n 5 "$OUT/sandbox.log"
