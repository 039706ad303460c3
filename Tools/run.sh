#!/usr/bin/env bash
# Runs the product on a fresh machine: installs the system libraries the build links (SQLite and
# zlib headers) if they are missing, then builds and starts `kanban agent` with its embedded
# SQLite replica; the board is at http://127.0.0.1:7420/ (or the port given with --port).
# Arguments go to `kanban agent`, e.g. Tools/run.sh --port 0 --data /tmp/board.
set -euo pipefail
cd "$(dirname "$0")/.."
. Tools/lib/debian.sh
debian_packages libsqlite3-dev zlib1g-dev
exec swift run kanban agent "$@"
