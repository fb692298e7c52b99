#!/usr/bin/env bash
# The project's checks, inside the project venv (scripts/setup.sh makes it): lint, format,
# types, then the whole test suite (arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  echo "test.sh: no .venv here; run first: bash scripts/setup.sh" >&2
  exit 1
fi
# shellcheck source=/dev/null
source .venv/bin/activate
ruff check .
ruff format --check .
mypy
python -m pytest -q "$@"
