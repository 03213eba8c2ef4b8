#!/usr/bin/env bash
# Installs Debian's `postgresql` package (the ledger tests start their own server with initdb and
# pg_ctl on a loopback port, as the `postgres` user when run as root), unless initdb is already
# there. Needs root or sudo for apt-get. Prints the directory holding initdb, pg_ctl and psql.
set -euo pipefail
find_bin() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then
    echo "$dir"
    return 0
  fi
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v initdb)")"
    return 0
  fi
  return 1
}
if find_bin; then
  exit 0
fi
echo "== installing Debian's postgresql package (first run only)" >&2
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql >&2
# The package may start a system cluster on :5432; the tests do not use it.
$SUDO systemctl stop postgresql >/dev/null 2>&1 || $SUDO service postgresql stop >/dev/null 2>&1 || true
find_bin
