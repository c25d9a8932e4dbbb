#!/usr/bin/env bash
# Quick start, main job: the corral console on the repository's embedded cluster.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec "${PYTHON:-python3}" -m console -c cluster.toml "$@"
