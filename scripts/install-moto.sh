#!/usr/bin/env bash
# Creates the Python virtualenv with the AWS emulator the SQS tests run against (moto 5.2.5 in
# server mode, SQS and EventBridge only: ~15 s, ~140 MB), unless it is already there. It lives
# outside the repository (survives `cargo clean`, shared by clones). Prints moto_server's path.
set -euo pipefail
VERSION=5.2.5
VENV="${MOTO_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/auth0-default-roles/moto-$VERSION}"
if [ -x "$VENV/bin/moto_server" ] && [ -f "$VENV/.installed" ]; then
  echo "$VENV/bin/moto_server"
  exit 0
fi
command -v python3 >/dev/null 2>&1 || { echo "python3 not found: the SQS tests need it for moto" >&2; exit 1; }
echo "== creating the moto $VERSION virtualenv in $VENV (first run only, ~15 s)" >&2
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
python3 -m venv "$VENV" >&2
"$VENV/bin/pip" install -q --disable-pip-version-check "moto[sqs,events]==$VERSION" flask flask-cors >&2
touch "$VENV/.installed"
echo "$VENV/bin/moto_server"
