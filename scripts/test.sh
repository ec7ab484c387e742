#!/usr/bin/env bash
# Set up (scripts/setup.sh: both resolutions), lint, type-check, then run the whole test suite
# (slow end-to-end tests included) on .venv (requirements.lock), and then the lock, library and
# Dango tests on .venv-dango (requirements-dango.lock: getdango 1.0.13, duckdb 1.5, dlt 1.28).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check dango_dagster tests bench
.venv/bin/mypy
echo "== pass 1: the whole suite on .venv (requirements.lock)"
.venv/bin/python -m pytest "$@"
echo "== pass 2: lock, library and Dango tests on .venv-dango (requirements-dango.lock)"
# getdango must be importable there, so its tests run instead of skipping.
.venv-dango/bin/python -c "import dango, duckdb, dlt; print('getdango', dango.__version__, \
'duckdb', duckdb.__version__, 'dlt', dlt.__version__)"
second=()
for pattern in "tests/test_lock_*.py" tests/test_layout.py tests/test_duckdb_resource.py \
  tests/test_component.py tests/test_definitions.py tests/test_dbt_compat.py \
  "tests/test_getdango*.py" "tests/test_dango*.py" tests/test_sources.py tests/test_ducklake.py; do
  for file in $pattern; do
    [ -e "$file" ] && second+=("$file")
  done
done
.venv-dango/bin/python -m pytest "${second[@]}" -p no:cacheprovider
