#!/usr/bin/env bash
# Fuzzes the agent's HTTP API against Protocol/agent-api.openapi.json with schemathesis.
#
# Starts a real agent (`kanban agent --port 0` on a temporary data directory), runs schemathesis
# on every documented operation (examples, coverage, fuzzing and stateful phases, positive and
# negative data) with these checks: no 5xx, response bodies match the document's schemas, status
# codes and content types are documented, documented response headers are valid, and invalid
# data is rejected. Then stops the agent by its PID. Exits non-zero on any failure; a crash of
# the agent is also a failure.
#
# Installs what it needs if missing: python3-venv from Debian, schemathesis (pinned in
# requirements.txt) from PyPI into Tools/fuzz/.venv.
# Needs the kanban binary: .build/debug/kanban (run `swift build` first) or $KANBAN_BIN.
# FUZZ_EXAMPLES (default 200) bounds the test cases per operation and phase; FUZZ_SEED fixes the seed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

. "$root/Tools/lib/venv.sh"
venv_for "$here"

kanban="${KANBAN_BIN:-$root/.build/debug/kanban}"
if [ ! -x "$kanban" ]; then
  echo "no kanban binary at $kanban: run 'swift build' first, or set KANBAN_BIN" >&2
  exit 1
fi

work="$(mktemp -d)"
agent_pid=""
cleanup() {
  if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
    kill -TERM "$agent_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$agent_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$agent_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

: >"$work/agent.log"
"$kanban" agent --port 0 --data "$work/data" >"$work/agent.log" 2>&1 </dev/null &
agent_pid=$!
port=""
for _ in $(seq 150); do  # up to 15 s for the agent to print its URL
  port="$(sed -n 's|.*Board: http://127\.0\.0\.1:\([0-9][0-9]*\)/.*|\1|p' "$work/agent.log" | head -n1)"
  [ -n "$port" ] && break
  kill -0 "$agent_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$port" ]; then
  echo "fuzz: the agent did not print 'Board: http://127.0.0.1:PORT/' within 15 s" >&2
  cat "$work/agent.log" >&2
  exit 1
fi
base="http://127.0.0.1:$port"
echo "fuzz: agent pid $agent_pid at $base" >&2

mkdir -p "$root/artifacts"
status=0
(
  cd "$here"  # schemathesis.toml (exceptions, with reasons) and hooks.py live here
  exec timeout 300 "$venv/bin/schemathesis" --config-file "$here/schemathesis.toml" \
    run "$root/Protocol/agent-api.openapi.json" \
    --url "$base" \
    --checks all \
    --exclude-checks "$(sed -n 's/^# exclude: //p' "$here/schemathesis.toml" | paste -sd,)" \
    --max-examples "${FUZZ_EXAMPLES:-200}" \
    ${FUZZ_SEED:+--seed "$FUZZ_SEED"} \
    --workers 1 \
    --request-timeout 10 \
    --report junit --report-junit-path "$root/artifacts/fuzz-junit.xml" \
    --no-color
) || status=$?

if ! kill -0 "$agent_pid" 2>/dev/null; then
  echo "fuzz: FAIL: the agent is no longer running" >&2
  tail -n 40 "$work/agent.log" >&2
  status=1
elif ! curl -fsS --max-time 5 "$base/health" >/dev/null; then
  echo "fuzz: FAIL: the agent no longer answers /health" >&2
  status=1
fi
# A request that failed inside the agent is answered 500 and logged; schemathesis flags the 500,
# and this catches any it did not see (e.g. a response it could not read).
if grep -q 'request failed' "$work/agent.log"; then
  echo "fuzz: FAIL: the agent logged failed requests:" >&2
  grep -m 20 'request failed' "$work/agent.log" >&2
  status=1
fi
[ "$status" -eq 0 ] && echo "fuzz: passed (agent still healthy, no failed requests in its log)" >&2
exit "$status"
