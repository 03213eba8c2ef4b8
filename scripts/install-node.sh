#!/usr/bin/env bash
# Installs Debian's `nodejs` package (Node.js 18+; the Action test runs the generated post-login
# Action in it, built-in modules only), unless a `node` of version 18 or later is on PATH.
# Needs root or sudo for apt-get. Prints the path of the `node` binary.
set -euo pipefail
major() { "$1" --version 2>/dev/null | sed -E 's/^v([0-9]+).*/\1/'; }
if command -v node >/dev/null 2>&1 && [ "$(major node)" -ge 18 ] 2>/dev/null; then
  command -v node
  exit 0
fi
echo "== installing Debian's nodejs package (first run only)" >&2
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs >&2
command -v node
