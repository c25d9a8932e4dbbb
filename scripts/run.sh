#!/usr/bin/env bash
# Quick start, main job: the corral console on the repository's embedded cluster.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
. scripts/python.sh
exec "$PY" -m console -c cluster.toml "$@"
