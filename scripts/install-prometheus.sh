#!/usr/bin/env bash
# Installs Debian's `prometheus` package (prometheus and promtool; the operations tests start
# their own Prometheus on a loopback port and use promtool), unless both are already on PATH.
# Needs root or sudo for apt-get. Prints the directory holding the two binaries.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  dirname "$(command -v promtool)"
  exit 0
fi
echo "== installing Debian's prometheus package (first run only)" >&2
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >&2
# The package starts a system Prometheus on :9090; the tests do not use it.
$SUDO systemctl stop prometheus >/dev/null 2>&1 || true
dirname "$(command -v promtool)"
