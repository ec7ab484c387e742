#!/usr/bin/env bash
# Set up (scripts/setup.sh), lint, then run the whole test suite, slow end-to-end tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check dango_dagster tests bench
.venv/bin/python -m pytest "$@"
