#!/usr/bin/env bash
# The LLM demo in one command: installs corral with its llm extra (transformers, peft) into the
# Python scripts/python.sh picks (the current virtual environment, else the project's .venv,
# so a stock Debian/Ubuntu python3 works too), writes a tiny Llama-architecture model and a text
# corpus to ~/.corral/demo (no download), and opens the console on examples/llm.toml (press s
# to start). Extra arguments go to the console: `bash scripts/llm-demo.sh check` prepares the
# same and runs the pre-flight check instead of opening the console.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --llm
. scripts/python.sh
demo="$HOME/.corral/demo"
if [ ! -e "$demo/tiny-lm/config.json" ] || [ ! -e "$demo/corpus.txt" ]; then
    "$PY" -m trainer.tiny_lm --out "$demo/tiny-lm" --corpus "$demo/corpus.txt"
fi
exec "$PY" -m console -c examples/llm.toml "$@"
