#!/usr/bin/env bash
# Installs the project and runs the whole test suite (unit, data, model, integration).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --browser
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
