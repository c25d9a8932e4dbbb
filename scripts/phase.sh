# Sourced by scripts/test.sh and scripts/beside_tests.sh: one pytest run of the suite.
# A run that selects no test (exit code 5) is no failure: the other one had them. Each phase
# ends with its slowest tests, where the suite's time goes.
# phase PYTHON PYTEST-ARGS...
phase() {
    local python=$1
    shift
    "$python" -m pytest -q -p no:cacheprovider --durations=15 "$@" || [ $? = 5 ]
}
