#!/usr/bin/env bash
# Fills in a config: render.sh CONF LISTEN_PORT RELAY_PORT PREFIX_DIR [RELAY_PORT_2] > out.conf
# (RELAY_PORT_2: the second instance of kanban-relays.conf.)
set -euo pipefail
sed -e "s|@LISTEN_PORT@|$2|g" -e "s|@RELAY_PORT@|$3|g" -e "s|@PREFIX@|$4|g" -e "s|@RELAY_PORT_2@|${5:-}|g" "$1"
