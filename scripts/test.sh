#!/usr/bin/env bash
# Quick start, tests: installs what the tests need (Python packages, into the current virtual
# environment or the project's .venv; and OpenSSH's sshd, iproute2, tcmalloc, python3-venv,
# podman and runc when running as root), then lint, types, layering and the test suite.
#   --fast   the fast tier only: no test marked slow (sshd, netns, torchrun ranks, large
#            models; tests/tiers.py says which). Any other argument goes to every pytest run.
# The full suite runs in three parts: the tests one more at a time than the machine has cores
# (pytest-xdist: slow tests wait on processes and limits as well as compute, and on two cores a
# third worker fills those waits, docs/benchmarks/ci-time.md "The full suite from a clean clone (issue 39)";
# a module's tests share a worker, so a module-scoped fixture such as a shared training run runs
# once; the longest modules are handed out first, tests/tiers.py: heaviest_first), then those
# marked serial one at a time, and last those marked alone, with nothing beside them
# (tests/tiers.py). --fast runs its tests two at a time,
# a module's tests on one worker (no fast test is serial; on two cores two workers beat one
# and three, docs/benchmarks/ci-time.md "The edit-test loop on two workers, and a throughput verdict CI's
# machine missed"), the type check beside them.
# Beside the parallel and serial phases, at the lowest CPU priority (scripts/lowest.sh: only the
# CPU the tests leave idle, where the machine allows it; scripts/beside_tests.sh), the type check
# and the builds of the torch matrix's environments: the floor and the newest torch corral
# admits, each in a virtual environment of its own that scripts/torch_matrix.sh builds once
# (about 4.5 GB each) and reuses. After the serial phase, at the normal priority, the matrix's
# tests: the fast tests of the code that runs on torch (tests/tiers.py: TORCH_MATRIX_PATHS) and
# the slow ones marked torch_matrix (exactness, resume, micro-batches).
# CORRAL_TORCH_MATRIX=off leaves the matrix out.
set -euo pipefail
cd "$(dirname "$0")/.."
# Python caches corral's compiled modules (and pytest its rewritten test modules) in
# __pycache__, which git ignores: with PYTHONDONTWRITEBYTECODE set, every rank, worker and
# console process the suite starts compiled them from source again (docs/benchmarks/ci-time.md "Compiled
# once, references on every core").
unset PYTHONDONTWRITEBYTECODE
# The type check's cache: one for every checkout on the machine (a fresh clone, CI's, a second
# worktree), unless MYPY_CACHE_DIR names another. mypy checks each cached module against its
# source file (size, time, and the hash where the time differs), so another checkout's entries
# are reused where the files are the same (docs/benchmarks/ci-time.md "CI's time, round 14"). Where that
# folder cannot be made (no home, or none writable) the checkout's own .mypy_cache, as mypy has
# it by default: mypy fails outright on a cache it cannot write.
export MYPY_CACHE_DIR=${MYPY_CACHE_DIR:-${HOME:+$HOME/.cache/corral/mypy}}
{ mkdir -p "$MYPY_CACHE_DIR" && [ -w "$MYPY_CACHE_DIR" ]; } 2>/dev/null || MYPY_CACHE_DIR=.mypy_cache
fast=false
if [ "${1:-}" = --fast ]; then
    shift
    fast=true
fi
# What runs beside the script's own steps, and how it ends with the script.
builds_log=$(mktemp)
builds_pid=
beside_log=$(mktemp)
beside_pid=
packages_log=$(mktemp)
packages_pid=
# Every pytest session (the phases, the torch matrix) adds its launches here and the total is
# judged against the suite's budget (tests/launch_count.py, docs/testing.md "Launches").
CORRAL_LAUNCH_TALLY=$(mktemp)
export CORRAL_LAUNCH_TALLY
packages_ready() {  # the system packages' installation ended: its output, and its status
    [ -n "$packages_pid" ] || return 0
    local status=0
    wait "$packages_pid" || status=$?
    packages_pid=
    cat "$packages_log" >&2
    return $status
}
end_beside() {
    for pid in $builds_pid $beside_pid; do kill -- "-$pid" 2>/dev/null || true; done
    for pid in $builds_pid $beside_pid; do wait "$pid" 2>/dev/null || true; done
    bash scripts/lowest.sh remove "$idle_group"
    bash scripts/leftovers.sh remove "$tests_group"
    packages_ready || true
    rm -f "$builds_log" "$beside_log" "$packages_log" "$CORRAL_LAUNCH_TALLY"
}
# The CPU group what runs beside the tests runs in (scripts/lowest.sh), removed at the end.
idle_group=$(bash scripts/lowest.sh make)
# The CPU group of the tests (scripts/leftovers.sh): what a phase leaves running is listed and
# ended after it, instead of starving what runs beside them.
tests_group=$(bash scripts/leftovers.sh make)
bash scripts/leftovers.sh join "$tests_group" $$
trap end_beside EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# The interpreter the project's .venv is made from, where the bootstrap below makes it: the
# distribution's python3 of python3's version where there is one (scripts/tests_python.sh says
# when, and why: the same tests take less CPU on it).
venv_python=${CORRAL_VENV_PYTHON:-}
[ -n "${PYTHON:-}$venv_python" ] || venv_python=$(bash scripts/tests_python.sh)
# The system packages the tests need (scripts/system_packages.sh: as root, with apt), installed
# beside the bootstrap below, which needs none of them unless that interpreter lacks its venv
# module; the tests wait for them. apt is never interrupted: in a session of its own, out of
# reach of a Ctrl-C, and waited for however this script ends.
if "${venv_python:-python3}" -c 'import ensurepip' >/dev/null 2>&1; then
    setsid -w bash scripts/system_packages.sh > "$packages_log" 2>&1 &
    packages_pid=$!
else
    bash scripts/system_packages.sh
fi
# The torch matrix's environments are built from the start, at the lowest CPU priority, while
# the bootstrap below keeps one core busy: with the interpreter the main environment is (or
# will be) made from (above, and scripts/python.sh). They run in a session of their own, ended
# with this script however this ends; scripts/beside_tests.sh waits for them.
if ! $fast && [ "${CORRAL_TORCH_MATRIX:-on}" != off ]; then
    PY=${PYTHON:-${venv_python:-python3}} setsid -w bash scripts/lowest.sh run "$idle_group" \
        bash scripts/torch_matrix.sh --build > "$builds_log" 2>&1 &
    builds_pid=$!
fi
bounded_wait() {  # bounded_wait PID DEADLINE WHAT: PID's status, or 1 once $SECONDS passes DEADLINE
    local pid=$1 left=$(($2 - SECONDS)) status=0
    if ! timeout "$((left > 1 ? left : 1))" tail --pid="$pid" -f /dev/null; then
        echo "corral: $3 still running at the deadline; what the machine runs, by CPU time:"
        ps -eo pid=,ni=,etime=,time=,args= --sort=-time | head -20 | cut -c1-200 | sed 's/^/  /'
        kill -- "-$pid" 2>/dev/null || true
        status=1
    fi
    wait "$pid" || status=$?
    return $status
}
# Each part's wall seconds, said at the end (the last lines are what a CI log shows first).
took=
mark=$SECONDS
part_done() {  # part_done NAME: the seconds since the previous part ended go to $took
    took="$took, $1 $((SECONDS - mark)) s"
    mark=$SECONDS
}
CORRAL_VENV_PYTHON=$venv_python bash scripts/bootstrap.sh --dev --llm
part_done "bootstrap"
. scripts/python.sh
lint() {  # the style, and the import contracts (pyproject.toml: [tool.importlinter])
    "$PY" -m ruff check .
    "$PY" -c "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports())"
}
if $fast; then  # the type check beside the tests, at the lowest CPU priority
    setsid -w bash scripts/lowest.sh run "$idle_group" "$PY" -m mypy > "$beside_log" 2>&1 &
    beside_pid=$!
    lint
    packages_ready
    failed=0
    "$PY" -m pytest -q -p no:cacheprovider -n 2 --dist loadscope -m "not slow" "$@" || failed=1
    echo "corral: the type check (it ran beside the tests)"
    wait "$beside_pid" || failed=1
    beside_pid=
    cat "$beside_log"
    exit $failed
fi
# Beside the parallel phase, at the lowest CPU priority (scripts/lowest.sh: it takes only what
# the tests leave idle), scripts/beside_tests.sh runs the type check and waits for the matrix's
# environments (the builds above; scripts/torch_matrix.sh waits on their lock). It starts
# before the lint, in a session of its own ended with this script however this ends. It goes on beside the serial tests, which use about one core of two (they wait on
# emulated slow devices), but not beside those marked alone: those run once it has ended
# (tests/tiers.py says which, and why).
PY="$PY" setsid -w bash scripts/lowest.sh run "$idle_group" \
    bash scripts/beside_tests.sh "$@" > "$beside_log" 2>&1 &
beside_pid=$!
lint
packages_ready
part_done "lint and system packages"
. scripts/phase.sh
failed=0
cores=$(nproc)
workers=$((cores + 1))
echo "corral: the parallel phase, $workers workers on $cores cores"
phase "$PY" -n "$workers" --dist loadscope --no-loadscope-reorder -m "not serial" "$@" || failed=1
bash scripts/leftovers.sh sweep "$tests_group" $$ "the parallel phase"
part_done "parallel phase"
# The tests marked serial, one at a time. Unless the arguments name tests, only the files that
# mark some test serial or alone are collected (collecting the whole suite again takes seconds).
serial_files=()
names_tests=false
for arg in "$@"; do
    case "$arg" in -*) ;; *) names_tests=true ;; esac
done
if ! $names_tests; then
    mapfile -t serial_files < <(grep -rlE --include='test_*.py' 'pytest\.mark\.(serial|alone)' \
                                tests | sort)
fi
phase "$PY" -m "serial and not alone" "$@" "${serial_files[@]}" || failed=1
bash scripts/leftovers.sh sweep "$tests_group" $$ "the serial phase"
part_done "serial phase"
echo "corral: the type check and the torch matrix's builds (they ran beside the tests)"
# Nothing else runs now: what ran beside the tests gets the normal weight, and a bounded time
# (CORRAL_BESIDE_WAIT_S, 1500 s: a fresh machine's matrix builds take a fraction),
# past which what is still running is listed and ended, and the run fails saying so.
bash scripts/lowest.sh raise "$idle_group"
beside_deadline=$((SECONDS + ${CORRAL_BESIDE_WAIT_S:-1500}))
bounded_wait "$beside_pid" "$beside_deadline" "the type check or the wait for the matrix's builds" \
    || failed=1
beside_pid=
if [ -n "$builds_pid" ]; then
    bounded_wait "$builds_pid" "$beside_deadline" "the torch matrix's builds" || failed=1
    builds_pid=
fi
part_done "the wait for the type check and the matrix's builds"
cat "$builds_log" "$beside_log"
# The torch matrix's tests, at the normal priority: many start ranks or import torch in a
# process they wait on with a deadline (scripts/matrix_tests.sh says why not beside the tests).
PY="$PY" bash scripts/matrix_tests.sh "not slow or torch_matrix" "$@" || failed=1
bash scripts/leftovers.sh sweep "$tests_group" $$ "the torch matrix"
part_done "the torch matrix"
# Those marked alone, with nothing beside them.
phase "$PY" -m alone "$@" "${serial_files[@]}" || failed=1
bash scripts/leftovers.sh sweep "$tests_group" $$ "the tests marked alone"
part_done "the tests marked alone"
echo "corral: the whole run took $SECONDS s (${took#, })"
exit $failed
