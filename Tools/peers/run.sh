#!/usr/bin/env bash
# Peer comparison in ONE run: the old design (python-socketio, ../shared/peers) and our relay
# (`kanban relay`, release build) under the same load generator (loadgen.py + kanban_adapter.py).
#
#   Tools/peers/run.sh                  # S1 S2 S3 S4 for both systems, DUR=20 s per fan-out scenario
#   DUR=5 IDLE=2000 Tools/peers/run.sh  # shorter run
#   SCENARIOS="S1 S2 S4" Tools/peers/run.sh
#   SCENARIOS=S4 SYSTEMS=kanban RSS_EVERY=0.5 SETTLE=8 Tools/peers/run.sh   # our relay alone, its RSS over time
#
# The peers folder is copied to a temp dir (nothing of theirs is copied into this repo); our adapter
# is dropped in next to loadgen.py. A fresh server (and fresh database) is started for every
# scenario. Python packages come from PyPI (../shared/peers/requirements.txt) into a venv under
# ${XDG_CACHE_HOME:-~/.cache}/kanban-peers-venv. Env: PEERS (default ../shared/peers), KANBAN
# (default .build/release/kanban), DUR=20, IDLE=2000, WAIT_QUIET=60, OUT (JSON lines, optional),
# SYSTEMS (default "socketio kanban"), SETTLE (S4's wait before its last RSS read; loadgen's
# default 3 s), RSS_EVERY (seconds: sample each server's RSS that often while it runs, and print
# the series after the tables; how the relay's memory trim after a burst of connections was
# looked at).
#
# S2 asks for each server's fan-out ceiling, but loadgen.py (one Python process) saturates at
# ~33k delivered msg/s, below what our relay delivers. So, in the same run and right after S2,
# our relay's ceiling is also measured with our own load generator (SYNC_BENCH, default
# .build/release/kanban-sync-bench: `fanout`, the same shape, windows 2 and 8), and the summary
# prints both ceilings and their ratio. SYNC_BENCH=none skips it.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PEERS=${PEERS:-$ROOT/../shared/peers}
KANBAN=${KANBAN:-$ROOT/.build/release/kanban}
DUR=${DUR:-20}
IDLE=${IDLE:-2000}
WAIT_QUIET=${WAIT_QUIET:-60}
SCENARIOS=${SCENARIOS:-"S1 S2 S3 S4"}
SYSTEMS=${SYSTEMS:-"socketio kanban"}
SETTLE=${SETTLE:-}
RSS_EVERY=${RSS_EVERY:-}
VENV=${VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kanban-peers-venv}
SIO_PORT=${SIO_PORT:-18765}
KB_PORT=${KB_PORT:-18767}
SYNC_BENCH=${SYNC_BENCH:-$ROOT/.build/release/kanban-sync-bench}

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [ ! -x "$KANBAN" ]; then (cd "$ROOT" && swift build -c release --product kanban); fi
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$PEERS/requirements.txt"
PY="$VENV/bin/python"

WORK=$(mktemp -d -t kanban-peers.XXXXXX)
(cd "$PEERS" && tar --exclude=.venv --exclude='*.json' -cf - .) | (cd "$WORK" && tar -xf -)
cp "$HERE/kanban_adapter.py" "$WORK/"
LINES="$WORK/lines.jsonl"
: > "$LINES"
SERVER_PID=""

stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$SERVER_PID" 2>/dev/null && kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}
cleanup() { stop_server; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open() { "$PY" -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(0 if s.connect_ex(('127.0.0.1',$1))==0 else 1)"; }

start_server() {  # socketio | kanban
  local kind=$1 port
  rm -rf "$WORK/db" && mkdir -p "$WORK/db"
  if [ "$kind" = socketio ]; then
    port=$SIO_PORT
    port_open "$port" && { echo "port $port busy" >&2; exit 1; }
    (cd "$WORK" && exec "$PY" socketio_relay.py --port "$port" --store sqlite --db "$WORK/db/sio.db") >>"$WORK/server.log" 2>&1 &
  else
    port=$KB_PORT
    port_open "$port" && { echo "port $port busy" >&2; exit 1; }
    "$KANBAN" relay serve --port "$port" --data "$WORK/db" --log-level error --max-connections-per-token 1000000 >>"$WORK/server.log" 2>&1 &
  fi
  SERVER_PID=$!
  for _ in $(seq 1 100); do port_open "$port" && return 0; sleep 0.1; done
  echo "server $kind did not start:" >&2; cat "$WORK/server.log" >&2; exit 1
}

scenario() {  # label kind adapter loadgen-args...
  local label=$1 kind=$2 adapter=$3; shift 3
  local url=http://127.0.0.1:$SIO_PORT prog=loadgen.py
  if [ "$kind" = kanban ]; then url=ws://127.0.0.1:$KB_PORT/sync; prog=kanban_adapter.py; fi
  start_server "$kind"
  echo "== $label ($kind/$adapter): $*" >&2
  local line sampler=""
  if [ -n "$RSS_EVERY" ]; then
    # Until the server stops: set-up, the scenario, and (S4) the settle and the closes.
    ( while kill -0 "$SERVER_PID" 2>/dev/null; do
        printf '%s ' "$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null)"; sleep "$RSS_EVERY"
      done ) > "$WORK/rss-$label.txt" &
    sampler=$!
  fi
  line=$(cd "$WORK" && KANBAN_BIN="$KANBAN" KANBAN_RELAY_DATA="$WORK/db" "$PY" "$prog" --label "$label" --adapter "$adapter" \
      --url "$url" --server-pid "$SERVER_PID" --wait-quiet "$WAIT_QUIET" "$@") \
    || line="{\"label\": \"$label\", \"adapter\": \"$adapter\", \"error\": \"loadgen exited non-zero\"}"
  stop_server
  if [ -n "$sampler" ]; then
    wait "$sampler" 2>/dev/null || true
    printf '%s server RSS KiB every %s s: %s\n' "$label" "$RSS_EVERY" "$(cat "$WORK/rss-$label.txt")" >> "$WORK/rss.txt"
  fi
  printf '%s\n' "$line" >> "$LINES"
}

for s in $SCENARIOS; do
  for sys in $SYSTEMS; do
    if [ "$sys" = socketio ]; then ad=socketio-raw; else ad=kanban; fi
    case $s in
      S1) scenario "S1-$sys" "$sys" "$ad" --boards 1 --subs 10 --writers 1 --rate 100 --duration "$DUR" ;;
      S2) scenario "S2-$sys" "$sys" "$ad" --boards 1 --subs 50 --writers 4 --rate 0 --window 2 --duration "$DUR" ;;
      S3) scenario "S3-$sys" "$sys" "$ad" --boards 100 --subs 5 --writers 10 --rate 1000 --duration "$DUR" ;;
      S4) scenario "S4-$sys" "$sys" "$ad" --idle "$IDLE" --boards 100 ${SETTLE:+--settle "$SETTLE"} ;;
    esac
  done
  if [ "$s" = S2 ] && [ "$SYNC_BENCH" != none ] && [[ " $SYSTEMS " == *" kanban "* ]]; then
    if [ ! -x "$SYNC_BENCH" ]; then (cd "$ROOT" && swift build -c release --product kanban-sync-bench); fi
    echo "== S2 ceiling (kanban relay, kanban-sync-bench fanout)" >&2
    "$SYNC_BENCH" fanout --kanban "$KANBAN" --subs 50 --writers 4 --windows 2,8 --duration "$DUR" \
      --wait-quiet "$WAIT_QUIET" > "$WORK/ceiling.md" || echo "kanban-sync-bench fanout failed" > "$WORK/ceiling.md"
  fi
done
[ -n "${OUT:-}" ] && cp "$LINES" "$OUT"

"$PY" - "$LINES" "$DUR" "$WORK/ceiling.md" <<'PYEOF'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def f(v, nd=1):
    if v is None: return "-"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)
print(f"\nPeer comparison (loadgen.py, same run; DUR={sys.argv[2]} s; CPU in % of one core, 2 cores total)\n")
print("| scenario | adapter | ops/s sent / acked | delivered msg/s | lost | fan-out p50 / p99 / max ms | ack p50 / p99 ms | CPU % server / loadgen / others |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    if r.get("mode") == "idle" or "error" in r and "mode" not in r: continue
    print(f"| {r['label']} | {r['adapter']} | {f(r.get('sent_ops_per_s'))} / {f(r.get('acked_ops_per_s'))} | {f(r.get('delivered_msgs_per_s'))} | {r.get('lost')} | "
          f"{f(r.get('fanout_lat_p50_ms'),2)} / {f(r.get('fanout_lat_p99_ms'),2)} / {f(r.get('fanout_lat_max_ms'),2)} | "
          f"{f(r.get('ack_lat_p50_ms'),2)} / {f(r.get('ack_lat_p99_ms'),2)} | {f(r.get('server_cpu_pct'))} / {f(r.get('loadgen_cpu_pct'))} / {f(r.get('other_procs_cpu_pct'))} |")
idle = [r for r in rows if r.get("mode") == "idle"]
if idle:
    print("\n| scenario | adapter | connected / requested | connects/s | server RSS before -> settled KiB | bytes/conn | CPU % srv / loadgen / others (connect) |")
    print("|---|---|---|---|---|---|---|")
    for r in idle:
        print(f"| {r['label']} | {r['adapter']} | {r['clients_connected']} / {r['clients_requested']} | {f(r.get('connects_per_s'))} | "
              f"{r.get('server_rss_before_kb')} -> {r.get('server_rss_settled_kb')} | {r.get('server_bytes_per_conn')} | "
              f"{f(r.get('connect_server_cpu_pct'))} / {f(r.get('connect_loadgen_cpu_pct'))} / {f(r.get('connect_other_procs_cpu_pct'))} |")
for r in rows:
    if "error" in r and "mode" not in r: print(f"\n{r['label']}: {r['error']}")
ceiling = sys.argv[3]
if os.path.exists(ceiling):
    # Rows of kanban-sync-bench's fan-out table: | shape | relay | delivered msgs/s | ...
    fan = [[c.strip() for c in l.strip().strip("|").split("|")] for l in open(ceiling) if l.startswith("| 50 x 1 board")]
    sio = next((r for r in rows if r.get("label") == "S2-socketio" and r.get("delivered_msgs_per_s")), None)
    print("\nS2 fan-out ceilings in this run (1 board, 50 subscribers, 4 writers, as fast as it goes):\n")
    print("| server | load generator | delivered msg/s | server CPU % | ratio to python-socketio |")
    print("|---|---|---|---|---|")
    base = sio["delivered_msgs_per_s"] if sio else None
    if sio:
        print(f"| python-socketio | loadgen.py, window 2 | {base:,.0f} | {f(sio.get('server_cpu_pct'))} | 1.0x |")
    for c in fan:
        rate = float(c[2])
        cpu = c[-1].split("/")[0].replace("srv", "").strip()
        ratio = f"{rate / base:.1f}x" if base else "-"
        print(f"| kanban relay | kanban-sync-bench fanout, {c[0].split(', ')[-1]} | {rate:,.0f} | {cpu} | {ratio} |")
    if not fan:
        print(open(ceiling).read())
PYEOF
if [ -f "$WORK/rss.txt" ]; then echo; cat "$WORK/rss.txt"; fi
