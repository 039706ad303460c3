#!/usr/bin/env bash
# Fault-injection soak: one relay, N agents behind fault proxies, random operations, faults, checks.
#   Tools/soak/run.sh --duration 60                 # builds `kanban` (debug) unless given a binary
#   Tools/soak/run.sh --binary .build/release/kanban --duration 1800 --seed 7
#   KANBAN_BIN=/path/to/kanban Tools/soak/run.sh ...
# Every option is passed to Tools/soak/soak.py (see --help). Needs python3 (standard library only).
set -euo pipefail
cd "$(dirname "$0")/../.."

has_binary=0
for arg in "$@"; do
  case "$arg" in --binary|--binary=*|-h|--help) has_binary=1 ;; esac
done
if [ "$has_binary" = 0 ]; then
  if [ -z "${KANBAN_BIN:-}" ]; then
    swift build --product kanban >&2
    KANBAN_BIN="$(swift build --show-bin-path)/kanban"
  fi
  set -- --binary "$KANBAN_BIN" "$@"
fi
# The proxy checks itself first (about 2 s): a broken proxy would make every soak result meaningless.
if ! out=$(python3 Tools/faultproxy/test_faultproxy.py 2>&1); then
  echo "$out" >&2
  echo "faultproxy self-test failed" >&2
  exit 1
fi
exec python3 Tools/soak/soak.py "$@"
