#!/usr/bin/env bash
# Runs the headless Chromium test of the web board (board_test.py).
# Installs what it needs if missing: Debian's chromium, and Playwright (the Python package only;
# it drives the system Chromium, so no browser is downloaded) in Tools/browser/.venv.
# Needs the kanban binary: .build/debug/kanban (run `swift build` first) or $KANBAN_BIN.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium" >&2
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi

. "$root/Tools/lib/venv.sh"
venv_for "$here"

export KANBAN_BIN="${KANBAN_BIN:-$root/.build/debug/kanban}"
if [ ! -x "$KANBAN_BIN" ]; then
  echo "no kanban binary at $KANBAN_BIN: run 'swift build' first, or set KANBAN_BIN" >&2
  exit 1
fi
cd "$root"
exec timeout 200 "$venv/bin/python" "$here/board_test.py" "$@"
