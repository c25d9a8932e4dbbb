#!/usr/bin/env bash
# Install corral and what it needs (see scripts/python.sh for which Python: the current virtual
# environment, else the project's .venv, created here when missing).
# An already-installed torch (e.g. a CUDA build) in corral's range is kept; without one,
# torch==2.13.0 is installed (the CPU wheel on this kind of machine) so pip never resolves a
# CUDA build itself.
# Usage: scripts/bootstrap.sh [--dev] [--llm]   (--dev: test tools; --llm: the LLM packages)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/python.sh
# An installed torch outside the range corral admits (trainer/compat.py) is replaced likewise.
# pip would compile its modules to bytecode one after another; they are compiled (corral's
# processes import a large part of torch, several at once), beside the install of the rest
# below, which keeps one core busy (docs/benchmarks/ci-time.md "CI's time, round 12").
compiling=
trap '[ -z "$compiling" ] || kill "$compiling" 2>/dev/null || true' EXIT
if ! "$PY" -c 'import sys, torch; from trainer.compat import torch_admitted
sys.exit(0 if torch_admitted(torch.__version__) else 1)' >/dev/null 2>&1; then
    echo "corral: installing torch==2.13.0" >&2
    "$PY" -m pip install -q --disable-pip-version-check --no-compile "torch==2.13.0"
    torch_dir=$("$PY" -c 'import importlib.util as u
print(u.find_spec("torch").submodule_search_locations[0])')
    # A few of torch's files are templates, not Python: compileall fails on them, as pip does.
    "$PY" -m compileall -q "$torch_dir" >/dev/null 2>&1 &
    compiling=$!
fi
extras=()
for arg in "$@"; do
    case "$arg" in
        # --dev: the test tools and every local extra the tests exercise (TensorBoard, plots,
        # the trackers, the browser view, the data sync's chunks; aim installs only on
        # Python <= 3.12 and its tests skip elsewhere).
        --dev) extras+=(dev tensorboard plot mlflow aim notify serve data) ;;
        # --llm: transformers + peft, and what a Trainer / TRL script needs (accelerate, trl,
        # datasets).
        --llm) extras+=(llm hf) ;;
        *) echo "usage: scripts/bootstrap.sh [--dev] [--llm]" >&2; exit 2 ;;
    esac
done
spec="."
if [ ${#extras[@]} -gt 0 ]; then spec=".[$(IFS=,; echo "${extras[*]}")]"; fi
# Of the rest (transformers, mlflow, the test tools: tens of thousands of modules) a run imports a
# small part: where Python writes bytecode itself (PYTHONDONTWRITEBYTECODE unset, as
# scripts/test.sh has it) those are compiled when first imported instead, and the install takes
# half the CPU (docs/benchmarks/ci-time.md "Ranks without torchrun's agent, one run where three were random,
# and what pip's bytecode costs").
lazily=()
[ -n "${PYTHONDONTWRITEBYTECODE:-}" ] || lazily=(--no-compile)
"$PY" -m pip install -q --disable-pip-version-check "${lazily[@]}" -e "$spec"
if [ -n "$compiling" ]; then
    wait "$compiling" || true
    compiling=
fi
