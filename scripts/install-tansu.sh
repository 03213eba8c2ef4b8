#!/usr/bin/env bash
# Installs the tansu broker the Kafka tests run against (crates.io tansu 0.6.0, an
# Apache-Kafka-compatible broker in Rust), unless it is already there. About 11 minutes on
# 2 cores the first time; its build directory is kept under ~/.cargo so an interrupted build
# resumes. Prints the binary's path.
set -euo pipefail
VERSION=0.6.0
BIN="${TANSU_BIN:-$HOME/.cargo/bin/tansu}"
if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "$VERSION"; then
  echo "$BIN"
  exit 0
fi
echo "== installing tansu $VERSION (first run only, ~11 min on 2 cores)" >&2
cargo install tansu --version "$VERSION" --features dynostore --locked \
  --target-dir "$HOME/.cargo/tansu-build" >&2
echo "$HOME/.cargo/bin/tansu"
