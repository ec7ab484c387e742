#!/usr/bin/env bash
# One host of a multi-host dango-dagster as plain processes (the recipe when Docker is not there;
# docker-compose.yml is the same thing in containers). Every host points at the same Postgres.
#
#   export DAGSTER_HOME=/srv/dagster_home          # one per host
#   export DAGSTER_PG_HOST=db DAGSTER_PG_PORT=5432 DAGSTER_PG_USER=dango DAGSTER_PG_PASSWORD=... DAGSTER_PG_DB=dagster
#   export DANGO_PROJECT_DIR=/srv/shop DANGO_LOCK_BACKEND=postgres \
#          DANGO_LOCK_DSN=postgresql://dango:...@db:5432/dango_lock DANGO_LOCK_KEY=shop
#   deploy/postgres/run_host.sh init           # DAGSTER_HOME/dagster.yaml + workspace.yaml
#   deploy/postgres/run_host.sh code-server &  # the code location, gRPC on DAGSTER_CODE_PORT (4000)
#   deploy/postgres/run_host.sh daemon &       # ONE host only: schedules, sensors, run queue
#   deploy/postgres/run_host.sh webserver      # any number of hosts: the UI on DAGSTER_WEB_PORT
#
# Run workers started on any host (the daemon's launcher, `dagster asset materialize`,
# `dango-dagster sync`) record into the shared instance and queue on the shared lock.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BIN="${DANGO_VENV_BIN:-$REPO/.venv/bin}"
: "${DAGSTER_HOME:?set DAGSTER_HOME (one folder per host)}"
CODE_HOST="${DAGSTER_CODE_HOST:-127.0.0.1}"
CODE_PORT="${DAGSTER_CODE_PORT:-4000}"

init() {
  mkdir -p "$DAGSTER_HOME"
  cp "$HERE/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
  sed -e "s/host: code/host: $CODE_HOST/" -e "s/port: 4000/port: $CODE_PORT/" \
    "$HERE/workspace.yaml" > "$DAGSTER_HOME/workspace.yaml"
}

case "${1:-}" in
  init) init ;;
  code-server)
    init
    exec "$BIN/dagster" code-server start -h "$CODE_HOST" -p "$CODE_PORT" \
      -m dango_dagster.definitions --location-name dango_dagster ;;
  daemon)
    init
    exec "$BIN/dagster-daemon" run -w "$DAGSTER_HOME/workspace.yaml" ;;
  webserver)
    init
    exec "$BIN/dagster-webserver" -h "${DAGSTER_WEB_HOST:-127.0.0.1}" \
      -p "${DAGSTER_WEB_PORT:-3000}" -w "$DAGSTER_HOME/workspace.yaml" ;;
  *) echo "usage: $0 init|code-server|daemon|webserver" >&2; exit 2 ;;
esac
