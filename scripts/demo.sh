#!/usr/bin/env bash
# Set up (scripts/setup.sh), then run the main job on the built-in demo project.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --main-only
exec .venv/bin/dango-dagster demo run "$@"
