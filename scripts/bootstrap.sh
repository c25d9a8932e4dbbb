#!/usr/bin/env bash
# Install corral and what it needs (see scripts/python.sh for which Python: the current virtual
# environment, else the project's .venv, created here when missing).
# An already-installed torch (e.g. a CUDA build) is kept; without one, torch==2.13.0 is
# installed (the CPU wheel on this kind of machine) so pip never resolves a CUDA build itself.
# Usage: scripts/bootstrap.sh [--dev] [--llm]   (--dev: test tools; --llm: transformers, peft, bitsandbytes)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/python.sh
if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    echo "corral: installing torch==2.13.0" >&2
    "$PY" -m pip install -q --disable-pip-version-check "torch==2.13.0"
fi
extras=()
for arg in "$@"; do
    case "$arg" in
        # --dev: the test tools and every local extra the tests exercise (TensorBoard, plots).
        --dev) extras+=(dev tensorboard plot) ;;
        --llm) extras+=(llm) ;;
        *) echo "usage: scripts/bootstrap.sh [--dev] [--llm]" >&2; exit 2 ;;
    esac
done
spec="."
if [ ${#extras[@]} -gt 0 ]; then spec=".[$(IFS=,; echo "${extras[*]}")]"; fi
"$PY" -m pip install -q --disable-pip-version-check -e "$spec"
