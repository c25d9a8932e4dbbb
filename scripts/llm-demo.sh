#!/usr/bin/env bash
# The LLM demo in one command: installs corral with its llm extra (transformers, peft), writes
# a tiny Llama-architecture model and a text corpus to ~/.corral/demo (no download), and opens
# the console on examples/llm.toml (press s to start). Extra arguments go to the console.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash scripts/bootstrap.sh --llm
demo="$HOME/.corral/demo"
if [ ! -e "$demo/tiny-lm/config.json" ] || [ ! -e "$demo/corpus.txt" ]; then
    "$PY" -m trainer.tiny_lm --out "$demo/tiny-lm" --corpus "$demo/corpus.txt"
fi
exec "$PY" -m console -c examples/llm.toml "$@"
