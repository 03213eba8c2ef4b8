#!/usr/bin/env bash
# Checks what the build needs beyond Rust (a C toolchain, make and perl for librdkafka's configure;
# pkg-config and the development files of the system's OpenSSL and zlib, which librdkafka links)
# and, when something is missing on a Debian/Ubuntu machine, installs it with apt-get as root or
# with sudo; elsewhere it says what to install and fails.
set -euo pipefail
PACKAGES="build-essential pkg-config libssl-dev zlib1g-dev"

missing() {
  local what=()
  for tool in cc make perl pkg-config; do
    command -v "$tool" >/dev/null 2>&1 || what+=("$tool")
  done
  if command -v pkg-config >/dev/null 2>&1; then
    for lib in openssl zlib; do
      pkg-config --exists "$lib" || what+=("$lib (development files)")
    done
  fi
  echo "${what[*]:-}"
}

lacking="$(missing)"
[ -z "$lacking" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "the build needs: $lacking. Install a C compiler, make, perl, pkg-config and the OpenSSL and zlib development files (Debian/Ubuntu: $PACKAGES)" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "the build needs: $lacking. Install them as root: apt-get install -y $PACKAGES" >&2
    exit 1
  fi
  SUDO="sudo"
fi
echo "== installing $PACKAGES (the build needs: $lacking)" >&2
$SUDO apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $PACKAGES >&2
lacking="$(missing)"
if [ -n "$lacking" ]; then
  echo "still missing after installing $PACKAGES: $lacking" >&2
  exit 1
fi
