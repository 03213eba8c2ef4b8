#!/usr/bin/env bash
# The project's one test command: formatting, lints, and every test, as CI runs them.
# Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs) first" >&2
  exit 1
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy

# The build needs a C toolchain, pkg-config and the system's OpenSSL and zlib development files
# (librdkafka is compiled from source and links them): checked first, installed with apt-get as
# root or with sudo when missing.
bash scripts/install-build-deps.sh

# The Kafka tests need a real Kafka-protocol broker: tansu, installed once.
TANSU_BIN="$(bash scripts/install-tansu.sh)"
export TANSU_BIN

# The SQS tests need an AWS emulator: moto in server mode, in a virtualenv created once
# (python3 needed; ~15 s) under ~/.cache/auth0-default-roles.
MOTO_SERVER="$(bash scripts/install-moto.sh)"
export MOTO_SERVER

# The manifest tests validate deploy/ against the Kubernetes schemas offline: kubernetes-validate
# (schemas bundled, no cluster, no kubectl) in a virtualenv created once beside moto's.
KUBERNETES_VALIDATE_BIN="$(bash scripts/install-kubernetes-validate.sh)"
export KUBERNETES_VALIDATE_BIN

# The operations tests need Prometheus and promtool: Debian's package, installed once.
PROMETHEUS_DIR="$(bash scripts/install-prometheus.sh)"
export PROMETHEUS_BIN="$PROMETHEUS_DIR/prometheus" PROMTOOL_BIN="$PROMETHEUS_DIR/promtool"

# The Action test runs the generated post-login Action in Node.js 18+ (built-in modules only):
# Debian's package, installed once. With NODE_BIN set, the test requires it.
NODE_BIN="$(bash scripts/install-node.sh)"
export NODE_BIN

# The ledger tests need PostgreSQL's initdb, pg_ctl and psql: Debian's package, installed once.
PG_BIN="$(bash scripts/install-postgresql.sh)"
export PG_BIN

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --workspace --all-targets --locked -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test --workspace --locked"
cargo test --workspace --locked
