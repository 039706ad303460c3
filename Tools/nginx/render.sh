#!/usr/bin/env bash
# Fills in a config: render.sh CONF LISTEN_PORT RELAY_PORT PREFIX_DIR > out.conf
set -euo pipefail
sed -e "s|@LISTEN_PORT@|$2|g" -e "s|@RELAY_PORT@|$3|g" -e "s|@PREFIX@|$4|g" "$1"
