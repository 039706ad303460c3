#!/usr/bin/env bash
# Checks the monitoring files and the metrics they rely on:
#  1. `promtool check rules` and `promtool test rules` on kanban-alerts.yml (every alert has
#     firing and non-firing cases in kanban-alerts.test.yml);
#  2. starts a real relay and agent (loopback, free ports, temporary data), syncs an operation,
#     scrapes both /metrics, then stops the relay so the agent records a link failure and scrapes
#     it again; each scrape must pass `promtool check metrics` (exposition format and lint);
#  3. every kanban_* metric the rules and kanban-dashboard.json use must appear in those
#     scrapes, and every dashboard query must parse (promtool, as recording rules).
# Installs Debian's prometheus package (which ships promtool; no smaller package does) if
# promtool is missing. Needs the kanban binary: .build/debug/kanban or $KANBAN_BIN.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"

if ! command -v promtool >/dev/null 2>&1; then
  echo "installing prometheus (for promtool)" >&2
  apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
kanban="${KANBAN_BIN:-$root/.build/debug/kanban}"
if [ ! -x "$kanban" ]; then
  echo "no kanban binary at $kanban: run 'swift build' first, or set KANBAN_BIN" >&2
  exit 1
fi

work="$(mktemp -d)"
promtool check rules kanban-alerts.yml
promtool test rules kanban-alerts.test.yml

# The dashboard's queries must parse: each becomes a recording rule that promtool checks
# (with the dashboard's $agent variable replaced by a regex that matches everything).
python3 - kanban-dashboard.json >"$work/dashboard-rules.yml" <<'PY'
import json, sys
panels = json.load(open(sys.argv[1]))["panels"]
exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
print("groups:\n  - name: dashboard\n    rules:")
for i, e in enumerate(exprs):
    print(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(e.replace('$agent', '.*'))}")
PY
echo "dashboard queries:"
promtool check rules "$work/dashboard-rules.yml"

relay_pid=""
agent_pid=""
stop() {  # stop PID: SIGTERM, then SIGKILL after 5 s
  local pid="$1"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() { stop "$agent_pid"; stop "$relay_pid"; rm -rf "$work"; }
trap cleanup EXIT

# wait_for DESCRIPTION COMMAND...: polls COMMAND every 0.1 s for up to 20 s.
wait_for() {
  local what="$1"; shift
  for _ in $(seq 200); do "$@" && return 0; sleep 0.1; done
  echo "monitoring: timed out waiting for $what" >&2
  tail -n 20 "$work"/*.log >&2
  return 1
}
printed() { grep -q "$2" "$1"; }

: >"$work/relay.log"
"$kanban" relay --port 0 --data "$work/relay" >"$work/relay.log" 2>&1 </dev/null &
relay_pid=$!
wait_for "the relay to listen" printed "$work/relay.log" 'listening on ws://'
relay_port="$(sed -n 's|.*listening on ws://[^ ]*:\([0-9][0-9]*\)/sync.*|\1|p' "$work/relay.log" | head -n1)"
token="$("$kanban" relay token create --data "$work/relay" --team monitoring)"

: >"$work/agent.log"
"$kanban" agent --port 0 --data "$work/agent" --relay "ws://127.0.0.1:$relay_port/sync" --token "$token" \
  >"$work/agent.log" 2>&1 </dev/null &
agent_pid=$!
wait_for "the agent to listen" printed "$work/agent.log" 'Board: http://127.0.0.1:'
agent_port="$(sed -n 's|.*Board: http://127\.0\.0\.1:\([0-9][0-9]*\)/.*|\1|p' "$work/agent.log" | head -n1)"
agent="http://127.0.0.1:$agent_port"

status() { curl -fsS --max-time 5 "$agent/health/websocket"; }
synced() { status | grep -q '"queuedOperations":0' && status | grep -q '"state":"connected"'; }
curl -fsS --max-time 5 -X POST -H 'Content-Type: application/json' -d '{"title":"Monitoring"}' "$agent/api/boards" >/dev/null
wait_for "the agent to sync its board" synced

scrape() {  # scrape URL NAME: saves the text and checks it with promtool
  curl -fsS --max-time 5 "$1/metrics" >"$work/$2.prom"
  echo "promtool check metrics < $2 /metrics ($(grep -c '^kanban_' "$work/$2.prom") samples)"
  promtool check metrics <"$work/$2.prom"
}
scrape "http://127.0.0.1:$relay_port" relay
scrape "$agent" agent-connected

# The relay goes away: the agent counts a classified failure and how long the link was up.
stop "$relay_pid"
relay_pid=""
failed() { status | grep -q '"errorClass"'; }
wait_for "the agent to record the link failure" failed
scrape "$agent" agent-offline

# Every metric the alert rules and the dashboard use must exist (histograms as their _bucket series).
missing=0
for name in $(grep -oh 'kanban_[a-z_]*' kanban-alerts.yml kanban-dashboard.json | sort -u); do
  if ! grep -q "^$name[{ ]" "$work"/*.prom; then
    echo "monitoring: $name is used by the rules or the dashboard, but neither the agent nor the relay exports it" >&2
    missing=1
  fi
done
[ "$missing" -eq 0 ]
echo "monitoring: rules checked and tested, dashboard queries parse, metrics of a real agent and relay valid, every metric used is exported"
