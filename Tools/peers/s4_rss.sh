#!/usr/bin/env bash
# The peers' S4 against our relay alone, with the relay's resident size sampled every 0.5 s:
# shows when memory is given back after 2,000 connections open at once (RelayMemoryTrim).
#
#   Tools/peers/s4_rss.sh                     # 2,000 connections on 100 boards, 3 rounds
#   ROUNDS=5 KANBAN=/tmp/old-kanban Tools/peers/s4_rss.sh
#
# Prints, per round: connects/s, relay RSS KiB before -> connected -> settled, bytes per
# connection (as S4 reports them), then the RSS timeline. Needs the venv Tools/peers/run.sh
# makes (run it once). Env: KANBAN (default .build/release/kanban), PEERS (../shared/peers),
# IDLE=2000, BOARDS=100, SETTLE=8 (s before the final RSS read), ROUNDS=3, PORT=18767.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PEERS=${PEERS:-$ROOT/../shared/peers}
KANBAN=${KANBAN:-$ROOT/.build/release/kanban}
IDLE=${IDLE:-2000}
BOARDS=${BOARDS:-100}
SETTLE=${SETTLE:-8}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-18767}
PY=${VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kanban-peers-venv}/bin/python
[ -x "$PY" ] || { echo "no venv at $PY: run Tools/peers/run.sh once first" >&2; exit 1; }
[ -x "$KANBAN" ] || { echo "no kanban binary at $KANBAN: swift build -c release --product kanban" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK=$(mktemp -d -t kanban-s4.XXXXXX)
SERVER=""
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
cp "$PEERS"/*.py "$WORK/" && cp "$HERE/kanban_adapter.py" "$WORK/"

for round in $(seq 1 "$ROUNDS"); do
  rm -rf "$WORK/db" && mkdir -p "$WORK/db"
  "$KANBAN" relay serve --port "$PORT" --data "$WORK/db" --log-level error --max-connections-per-token 1000000 \
    > "$WORK/server.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 1 100); do (echo > "/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  # Sampled until the load generator has closed its connections (setup, connects, settle, close).
  ( while kill -0 "$SERVER" 2>/dev/null; do
      printf '%s ' "$(awk '/VmRSS/ {print $2}' "/proc/$SERVER/status" 2>/dev/null)"; sleep 0.5
    done ) > "$WORK/rss.txt" &
  SAMPLER=$!
  (cd "$WORK" && KANBAN_BIN="$KANBAN" KANBAN_RELAY_DATA="$WORK/db" "$PY" kanban_adapter.py --label S4 --adapter kanban \
      --url "ws://127.0.0.1:$PORT/sync" --server-pid "$SERVER" --wait-quiet 5 --idle "$IDLE" --boards "$BOARDS" \
      --settle "$SETTLE" 2>/dev/null) > "$WORK/result.json"
  sleep 1
  kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true
  SERVER=""
  wait "$SAMPLER" 2>/dev/null || true
  "$PY" - "$WORK/result.json" "$round" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"round {sys.argv[2]}: {r['clients_connected']} connected, {r['connects_per_s']} connects/s, RSS KiB "
      f"{r['server_rss_before_kb']} -> {r['server_rss_connected_kb']} -> {r['server_rss_settled_kb']}, "
      f"{r['server_bytes_per_conn']} B per connection")
PYEOF
  echo "  RSS KiB every 0.5 s: $(cat "$WORK/rss.txt")"
done
