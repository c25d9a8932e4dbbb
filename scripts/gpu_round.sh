#!/usr/bin/env bash
# The GPU round (docs/benchmarks/gpu.md "GPU"), on a machine with CUDA, from the repository root:
#   bash scripts/gpu_round.sh OUT_DIR [--quick]
# The gpu-marked tests (by the files that hold them, so a machine without Textual need not
# collect the console's), the step-gap profile in bf16 and fp32 (bench/gpu_step_gap.py), then
# corral against a bare DDP loop (bench/gpu_overhead.py; two rounds, one with --quick) and a GPU
# host beside a CPU host (bench/gpu_mixed.py; skipped with --quick). Every result and log goes
# to OUT_DIR; a part that fails is said and the rest still runs.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_round.sh OUT_DIR [--quick]}
quick=${2:-}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
status=0
step() {  # name, command...: run one part, its output to OUT_DIR/name.log and the screen
    local name=$1
    shift
    echo "== $name: $*"
    local start=$SECONDS
    "$@" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] || status=1
}
nvidia-smi -L
"$py" -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))'
files=$(grep -rl "mark.gpu" tests --include='test_*.py' | sort)
# shellcheck disable=SC2086
step gpu_tests "$py" -m pytest -q -p no:cacheprovider -m gpu -n 4 $files
step gap_bf16 "$py" bench/gpu_step_gap.py --precision bf16 --json "$out/gap_bf16.json"
step gap_fp32 "$py" bench/gpu_step_gap.py --precision fp32 --json "$out/gap_fp32.json"
if [ "$quick" = --quick ]; then
    step overhead "$py" bench/gpu_overhead.py --rounds 2 --steps 120 --skip 30 \
        --json "$out/overhead.json"
else
    step overhead "$py" bench/gpu_overhead.py --rounds 2 --json "$out/overhead.json"
    step mixed "$py" bench/gpu_mixed.py --rounds 2
fi
exit $status
