#!/usr/bin/env bash
# Install everything into ./.venv from the lock file. Idempotent: a second run takes seconds.
# Needs only python3 (3.11+). Bytecode is compiled at install time because this machine sets
# PYTHONDONTWRITEBYTECODE=1: without it every import of dagster and dbt costs twice as long.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
# PostgreSQL binaries (initdb, pg_ctl) for the multi-host tests, which start a throwaway server of
# their own (tests/pgserver.py). Installed as root when missing; elsewhere those tests skip.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; } \
      || echo "warning: could not install postgresql; the multi-host tests will skip" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -m uv --version >/dev/null 2>&1; then
  .venv/bin/python -m pip install --quiet "uv==0.13.9"
fi
.venv/bin/python -m uv pip install --quiet --python .venv/bin/python --compile-bytecode \
  -r requirements.lock
.venv/bin/python -m uv pip install --quiet --python .venv/bin/python --compile-bytecode \
  --no-deps -e .
# The second resolution (requirements-dango.lock): dango-dagster beside getdango 1.0.13, which forces
# duckdb 1.5.x and dlt 1.28.x. scripts/test.sh runs the lock, library and Dango tests in it as well.
# `scripts/setup.sh --main-only` (the demo) skips it.
if [ "${1:-}" != "--main-only" ]; then
  if [ ! -x .venv-dango/bin/python ]; then
    "$PY" -m venv .venv-dango
  fi
  .venv/bin/python -m uv pip install --quiet --python .venv-dango/bin/python --compile-bytecode \
    -r requirements-dango.lock
  .venv/bin/python -m uv pip install --quiet --python .venv-dango/bin/python --compile-bytecode \
    --no-deps -e .
  # DuckLake (warehouse.kind: ducklake) runs only in the duckdb 1.5.5 resolution: lay its extension
  # packages out where DuckDB looks for them, so nothing is ever downloaded (idempotent, instant).
  .venv-dango/bin/python -m dango_dagster.lake.extensions >/dev/null
fi

# The web UI test (tests/test_web_ui.py) drives Debian's headless Chromium through its WebDriver.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing chromium and chromium-driver (for the web UI test) ..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
      || { apt-get update -qq >/dev/null \
           && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }
  else
    echo "NOTE: chromium and chromedriver are missing, so the web UI test (tests/test_web_ui.py) cannot run." >&2
    echo "      Install them as root: apt-get install chromium chromium-driver" >&2
  fi
fi
