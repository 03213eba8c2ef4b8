#!/usr/bin/env bash
# Creates the Python virtualenv with kubernetes-validate (the Kubernetes API schemas bundled,
# so the manifests under deploy/ are checked offline, with no cluster and no kubectl; ~10 s,
# ~150 MB), unless it is already there. It lives outside the repository (survives
# `cargo clean`, shared by clones), beside moto's. Prints kubernetes-validate's path.
set -euo pipefail
VERSION=1.37.0
VENV="${KUBERNETES_VALIDATE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/auth0-default-roles/kubernetes-validate-$VERSION}"
if [ -x "$VENV/bin/kubernetes-validate" ] && [ -f "$VENV/.installed" ]; then
  echo "$VENV/bin/kubernetes-validate"
  exit 0
fi
command -v python3 >/dev/null 2>&1 || { echo "python3 not found: the manifest tests need it for kubernetes-validate" >&2; exit 1; }
echo "== creating the kubernetes-validate $VERSION virtualenv in $VENV (first run only, ~10 s)" >&2
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
python3 -m venv "$VENV" >&2
"$VENV/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$VERSION" >&2
touch "$VENV/.installed"
echo "$VENV/bin/kubernetes-validate"
