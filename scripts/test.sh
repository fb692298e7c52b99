#!/usr/bin/env bash
# The project's checks: lint, format, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check .
ruff format --check .
python3 -m pytest -q "$@"
