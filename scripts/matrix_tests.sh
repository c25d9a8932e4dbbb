#!/usr/bin/env bash
# The torch matrix's tests on each release scripts/torch_matrix.sh provides (the floor and the
# newest torch corral admits), the releases side by side, each in its own log, said in order:
# the tests under tests/tiers.py's TORCH_MATRIX_PATHS that MARKS selects.
#   PY=... bash scripts/matrix_tests.sh MARKS [PYTEST-ARGS...]
# scripts/test.sh runs them all ("not slow or torch_matrix": the fast ones, and the slow ones of
# exactness, resume and micro-batches) after the serial phase, at the normal priority: many start
# a rank or a torch import with a deadline, which an idle CPU group beside a full parallel phase
# starves past (CI's runs of stop 86: three slow ones timed out there, then two fast ones).
# CORRAL_TORCH_MATRIX=off runs nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${PY:?PY must name the python of the main environment, as scripts/python.sh sets it}"
marks=${1:?which tests: a pytest -m expression}
shift
[ "${CORRAL_TORCH_MATRIX:-on}" != off ] || exit 0
. scripts/phase.sh
failed=0
matrix=$(PY="$PY" bash scripts/torch_matrix.sh) || exit 1
read -ra matrix_paths <<< "$("$PY" -c 'import sys; sys.path.insert(0, "tests")
from tiers import TORCH_MATRIX_PATHS; print(*TORCH_MATRIX_PATHS)')"
# Each release's run ends on its longest modules with one of its two workers idle, and the
# other release's fill that (docs/benchmarks/ci-time.md "CI's time, round 12").
logs=()
pids=()
trap 'rm -f "${logs[@]}"' EXIT
for matrix_py in $matrix; do
    log=$(mktemp)
    logs+=("$log")
    {
        release=$("$matrix_py" -c 'import torch; print(torch.__version__)')
        echo "corral: the torch matrix on $release ($marks)"
        phase "$matrix_py" -n 2 --dist loadscope --no-loadscope-reorder -m "$marks" "$@" \
            "${matrix_paths[@]}"
    } > "$log" 2>&1 &
    pids+=($!)
done
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || failed=1
    cat "${logs[$i]}"
done
exit $failed
