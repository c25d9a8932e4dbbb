#!/usr/bin/env bash
# What scripts/test.sh runs beside its test phases, at the lowest CPU priority: the type check
# (mypy), then, unless CORRAL_TORCH_MATRIX=off, the torch matrix: the fast tests of the code
# that runs on torch and those marked torch_matrix (tests/tiers.py: TORCH_MATRIX_PATHS), two at
# a time, on each torch release scripts/torch_matrix.sh provides (the floor and the newest
# corral admits). PY names the main environment's python; arguments go to every pytest run.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${PY:?PY must name the python of the main environment, as scripts/python.sh sets it}"
. scripts/phase.sh
failed=0
echo "corral: the type check"
"$PY" -m mypy || failed=1
if [ "${CORRAL_TORCH_MATRIX:-on}" = off ]; then
    exit $failed
fi
matrix=$(PY="$PY" bash scripts/torch_matrix.sh) || exit 1
read -ra matrix_paths <<< "$("$PY" -c 'import sys; sys.path.insert(0, "tests")
from tiers import TORCH_MATRIX_PATHS; print(*TORCH_MATRIX_PATHS)')"
for matrix_py in $matrix; do
    echo "corral: the torch matrix on $("$matrix_py" -c 'import torch; print(torch.__version__)')"
    phase "$matrix_py" -n 2 --dist loadscope --no-loadscope-reorder -m "not slow or torch_matrix" \
        "$@" "${matrix_paths[@]}" || failed=1
done
exit $failed
