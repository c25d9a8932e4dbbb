#!/usr/bin/env bash
# What scripts/test.sh runs beside its parallel and serial phases, at the lowest CPU priority: the
# type check (mypy) and, unless CORRAL_TORCH_MATRIX=off, the torch matrix: once its environments
# are built (scripts/torch_matrix.sh waits for the builds scripts/test.sh started, or builds what
# is missing: mostly downloading and unpacking, so the type check runs meanwhile), the fast tests
# of the code that runs on torch and those marked torch_matrix (tests/tiers.py:
# TORCH_MATRIX_PATHS), two at a time, on each torch release the matrix provides (the floor and the
# newest corral admits), the releases side by side.
# PY names the main environment's python; arguments go to every pytest run.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${PY:?PY must name the python of the main environment, as scripts/python.sh sets it}"
. scripts/phase.sh
failed=0
types_log=$(mktemp)
trap 'rm -f "$types_log"' EXIT
"$PY" -m mypy > "$types_log" 2>&1 &
types_pid=$!
matrix=
if [ "${CORRAL_TORCH_MATRIX:-on}" != off ]; then
    matrix=$(PY="$PY" bash scripts/torch_matrix.sh) || failed=1
fi
echo "corral: the type check"
wait "$types_pid" || failed=1
cat "$types_log"
read -ra matrix_paths <<< "$("$PY" -c 'import sys; sys.path.insert(0, "tests")
from tiers import TORCH_MATRIX_PATHS; print(*TORCH_MATRIX_PATHS)')"
# After the type check, as before, the releases' runs side by side, each in its own log, said
# in order: each ends on its longest modules with one of its two workers idle, and the other
# release's fill that (docs/benchmarks/ci-time.md "CI's time, round 12").
matrix_logs=()
matrix_pids=()
trap 'rm -f "$types_log" "${matrix_logs[@]}"' EXIT
for matrix_py in $matrix; do
    log=$(mktemp)
    matrix_logs+=("$log")
    {
        release=$("$matrix_py" -c 'import torch; print(torch.__version__)')
        echo "corral: the torch matrix on $release"
        phase "$matrix_py" -n 2 --dist loadscope --no-loadscope-reorder \
            -m "not slow or torch_matrix" "$@" "${matrix_paths[@]}"
    } > "$log" 2>&1 &
    matrix_pids+=($!)
done
for i in "${!matrix_pids[@]}"; do
    wait "${matrix_pids[$i]}" || failed=1
    cat "${matrix_logs[$i]}"
done
exit $failed
