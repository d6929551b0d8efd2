#!/usr/bin/env bash
# Installs the system packages apigate's build needs on a bare Debian/Ubuntu machine:
# cmake (pingora's zlib-ng) and a C toolchain. Does nothing when they are present.
set -euo pipefail
missing=()
for cmd in cmake cc pkg-config; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[bootstrap] installing build packages (missing: ${missing[*]})" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq cmake build-essential pkg-config >/dev/null
fi
