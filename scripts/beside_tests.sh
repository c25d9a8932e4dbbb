#!/usr/bin/env bash
# What scripts/test.sh runs beside its parallel and serial phases, at the lowest CPU priority: the
# type check (mypy) and, unless CORRAL_TORCH_MATRIX=off, the wait for the torch matrix's
# environments (scripts/torch_matrix.sh waits for the builds scripts/test.sh started, or builds
# what is missing: mostly downloading and unpacking, so the type check runs meanwhile). The
# matrix's tests run after the serial phase (scripts/matrix_tests.sh says why).
# PY names the main environment's python; arguments go to every pytest run.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${PY:?PY must name the python of the main environment, as scripts/python.sh sets it}"
failed=0
types_log=$(mktemp)
trap 'rm -f "$types_log"' EXIT
"$PY" -m mypy > "$types_log" 2>&1 &
types_pid=$!
if [ "${CORRAL_TORCH_MATRIX:-on}" != off ]; then  # the environments, built or waited for
    PY="$PY" bash scripts/torch_matrix.sh >/dev/null || failed=1
fi
echo "corral: the type check"
wait "$types_pid" || failed=1
cat "$types_log"
exit $failed
