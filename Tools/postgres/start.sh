#!/usr/bin/env bash
# Starts a throwaway PostgreSQL for the tests and benchmarks: Debian's `postgresql` (installed
# if missing), `initdb` in a new temporary directory, listening on 127.0.0.1 only, on a free
# port, trust authentication (loopback, throwaway data). When run as root the server runs as
# `nobody` (PostgreSQL refuses to run as root).
#
# Prints shell assignments for eval:
#   eval "$(Tools/postgres/start.sh)"   # KANBAN_POSTGRES_URL, KANBAN_POSTGRES_DIR
#   ...
#   Tools/postgres/stop.sh "$KANBAN_POSTGRES_DIR"
set -euo pipefail

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "installing postgresql" >&2
  # Install only: a policy-rc.d that refuses keeps the package from starting its own cluster;
  # the tests start theirs.
  policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy=1
  fi
  apt-get update -qq >&2 && apt-get install -y -qq postgresql >/dev/null
  [ -n "$policy" ] && rm -f /usr/sbin/policy-rc.d
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi

dir=$(mktemp -d /tmp/kanban-pg-XXXXXX)
chmod 755 "$dir"
as=()
if [ "$(id -u)" = 0 ]; then
  chown nobody:nogroup "$dir"
  as=(runuser -u nobody --)
fi

"${as[@]}" "$bin/initdb" -D "$dir/data" -U kanban --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; rm -rf "$dir"; exit 1; }

started=
for _ in $(seq 1 20); do
  port=$(( 40000 + RANDOM % 5000 ))
  if "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null 2>&1; then
    started=1
    break
  fi
done
if [ -z "$started" ]; then
  echo "postgres did not start; log:" >&2
  cat "$dir/server.log" >&2 || true
  rm -rf "$dir"
  exit 1
fi
"${as[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U kanban kanban

echo "KANBAN_POSTGRES_URL=postgres://kanban@127.0.0.1:$port/kanban"
echo "KANBAN_POSTGRES_DIR=$dir"
echo "export KANBAN_POSTGRES_URL KANBAN_POSTGRES_DIR"
