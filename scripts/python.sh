# Sourced by the quick-start scripts (from the repository root): sets PY, the Python they use.
#
# Inside a virtual environment, that environment's python3. Otherwise the project's own
# virtual environment .venv, created on first use from python3 on PATH (or CORRAL_VENV_PYTHON,
# which scripts/test.sh sets: scripts/tests_python.sh), so a stock Debian or Ubuntu interpreter,
# where pip refuses to install into the system (PEP 668), works too. .venv sees the system's
# site-packages, so a torch installed there (a CUDA build, say) is kept.
# PYTHON=/path/to/python uses that interpreter as it is.
if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif python3 -c 'import sys; sys.exit(0 if sys.prefix != sys.base_prefix else 1)'; then
    PY=python3
else
    if [ ! -x .venv/bin/python ]; then
        echo "corral: creating the project's virtual environment .venv" \
             "(${CORRAL_VENV_PYTHON:-python3} -m venv)" >&2
        if ! "${CORRAL_VENV_PYTHON:-python3}" -m venv --system-site-packages .venv; then
            rm -rf .venv
            echo "corral: ${CORRAL_VENV_PYTHON:-python3} -m venv failed; install the venv" \
                 "module (Debian/Ubuntu: apt install python3-venv) and run this again" >&2
            exit 1
        fi
        # The venv module brings the pip of the interpreter's release (Debian 12's: 23.0.1); a
        # current one installs corral and its extras in half the time (docs/benchmarks/ci-time.md "CI's
        # time, round 12"). Offline, the one it brought does.
        .venv/bin/python -m pip install -q --disable-pip-version-check "pip>=25" \
            || echo "corral: pip could not be upgraded in .venv; installing with its own" >&2
    fi
    PY=$PWD/.venv/bin/python
fi
