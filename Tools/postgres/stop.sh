#!/usr/bin/env bash
# Stops the PostgreSQL started by start.sh (fast shutdown) and removes its directory.
#   Tools/postgres/stop.sh "$KANBAN_POSTGRES_DIR"
set -uo pipefail
dir=${1:-${KANBAN_POSTGRES_DIR:-}}
[ -n "$dir" ] && [ -d "$dir/data" ] || { echo "stop.sh: no server directory given" >&2; exit 0; }
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as=()
[ "$(id -u)" = 0 ] && as=(runuser -u nobody --)
"${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
# If it is still running (pg_ctl failed), end exactly that server by its PID.
if [ -f "$dir/data/postmaster.pid" ]; then
  pid=$(head -1 "$dir/data/postmaster.pid")
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
fi
rm -rf "$dir"
