# Sourced by the Python-based test tools: makes "$1/.venv" (installing Debian's python3-venv if
# that is missing) and installs "$1/requirements.txt" into it when the file changed since the
# last install. Sets $venv.
venv_for() {
  local dir="$1"
  venv="$dir/.venv"
  local stamp="$venv/.requirements"
  if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -m venv "$venv" 2>/dev/null; then
      echo "installing python3-venv" >&2
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      rm -rf "$venv"
      python3 -m venv "$venv"
    fi
  fi
  if ! cmp -s "$dir/requirements.txt" "$stamp"; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$dir/requirements.txt"
    cp "$dir/requirements.txt" "$stamp"
  fi
}
