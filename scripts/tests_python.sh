#!/usr/bin/env bash
# Prints the interpreter scripts/test.sh makes the project's .venv from, when it makes one: the
# distribution's /usr/bin/python3 where it is the same Python minor version as python3 on PATH,
# has the venv module, and python3 on PATH is no virtual environment and holds no torch of its
# own (a CUDA build the tests should use); else python3. A version manager's interpreter
# (pyenv's, say) is built by default without profile-guided optimisation and runs from a shared
# libpython; a distribution's is optimised and linked whole. The same tests took 10–13 % less
# CPU on Debian's (docs/benchmarks/ci-time.md "CI's time, round 11"), and the suite is CPU-bound on two cores.
set -euo pipefail
distribution=/usr/bin/python3
minor='import sys; print("%d.%d" % sys.version_info[:2])'
if [ -x "$distribution" ] && command -v python3 >/dev/null \
        && [ "$(realpath "$distribution")" != "$(realpath "$(command -v python3)")" ] \
        && [ "$("$distribution" -c "$minor")" = "$(python3 -c "$minor")" ] \
        && "$distribution" -c 'import ensurepip, venv' >/dev/null 2>&1 \
        && ! python3 -c 'import importlib.util, sys
sys.exit(0 if sys.prefix != sys.base_prefix or importlib.util.find_spec("torch") else 1)' \
            >/dev/null 2>&1; then
    echo "$distribution"
else
    echo python3
fi
