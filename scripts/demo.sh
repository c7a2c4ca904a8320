#!/usr/bin/env bash
# Installs the project and runs the main job end to end on the embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/cto demo "$@"
