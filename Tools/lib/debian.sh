# Sourced by the project's scripts: installs the named Debian packages that are missing
# (one `apt-get update`, then one `apt-get install`), saying which on stderr.
debian_packages() {
  local need=() pkg
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    apt-get update -qq >&2 && apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}
