#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite; with arguments, pytest with those arguments.
#
# The whole suite runs as two pytest processes side by side, one thread each: the sd21
# rehearsal (tests marked `rehearsal`: the full-size models, about 10 CPU-minutes) and all
# the other tests. It passes when both pass.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
bash scripts/install-test-deps.sh
if [ "$#" -gt 0 ]; then
    exec python -m pytest "$@"
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
mkdir -p .cache/bas
rehearsal_log=.cache/bas/rehearsal-tests.log
python -m pytest -m rehearsal -p no:cacheprovider >"$rehearsal_log" 2>&1 &
rehearsal=$!
trap 'kill "$rehearsal" 2>/dev/null || true' INT TERM
set +e
python -m pytest -m "not rehearsal"
others=$?
echo "waiting for the sd21 rehearsal tests (log: $rehearsal_log) ..."
wait "$rehearsal"
rehearsed=$?
set -e
echo "---------------- the sd21 rehearsal tests ----------------"
cat "$rehearsal_log"
if [ "$others" -ne 0 ] || [ "$rehearsed" -ne 0 ]; then
    echo "FAILED: the other tests exited $others, the rehearsal tests $rehearsed" >&2
    exit 1
fi
