#!/usr/bin/env bash
# Runs every test of the project on a fresh machine: installs what the tests need from Debian
# (SQLite and zlib headers, nginx, PostgreSQL; Chromium for the browser test), then `swift test`.
set -euo pipefail
cd "$(dirname "$0")/.."

. Tools/lib/debian.sh
debian_packages libsqlite3-dev zlib1g-dev nginx-light

swift build --build-tests

# A throwaway PostgreSQL (installed if missing, loopback, temporary directory) for the
# multi-relay tests; stopped and removed on exit, whatever happens.
pg_env=$(Tools/postgres/start.sh)
eval "$pg_env"
trap 'Tools/postgres/stop.sh "$KANBAN_POSTGRES_DIR"' EXIT

# nginx is started by the tests themselves (foreground, own prefix, loopback port); require it,
# and the PostgreSQL above.
KANBAN_REQUIRE_NGINX=1 KANBAN_REQUIRE_POSTGRES=1 swift test --skip-build "$@"

# Fault-injection soak, short run (about 70 s): 1 relay + 4 agents behind fault proxies, random
# operations while links are cut/delayed/paused and processes are killed; nothing lost, all converge.
# The relay folds a board's log past 100 operations, so agents also catch up through snapshots.
Tools/soak/run.sh --binary .build/debug/kanban --duration 60 --converge-timeout 60 --compaction-threshold 100
# The same with the relay's data often put back to an earlier copy, as a restore from backup
# would (a quarter of the faults): agents push again what it lost and get what they miss (about 70 s).
Tools/soak/run.sh --binary .build/debug/kanban --duration 60 --converge-timeout 60 \
    --faults delay,pause,cut,reset,refuse,agent_kill,relay_restart,relay_rollback:40
# The same with two relays sharing the PostgreSQL log above, each new agent connection going to
# the next relay: catch-up across instances, a relay killed under its agents (about 70 s).
Tools/soak/run.sh --binary .build/debug/kanban --duration 60 --converge-timeout 60 --relays 2 --store "$KANBAN_POSTGRES_URL"
Tools/postgres/stop.sh "$KANBAN_POSTGRES_DIR"
trap - EXIT

# The HTTP API fuzzed against Protocol/agent-api.openapi.json by schemathesis (installs it if missing).
Tools/fuzz/run.sh

# Prometheus alert rules (promtool check/test rules) and a real agent's and relay's /metrics
# (promtool check metrics); installs Debian's prometheus package for promtool if missing.
Tools/monitoring/check.sh

# The web board in headless Chromium against a real agent (installs chromium and Playwright if missing).
Tools/browser/run.sh
