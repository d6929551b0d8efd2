#!/usr/bin/env bash
# Checks the shipped Prometheus alert rules with promtool: their syntax (`check rules`)
# and the alerts' unit tests (`test rules`, manifests/monitoring/apigate-alerts.test.yaml).
#
# promtool comes from Debian's `prometheus` package, unpacked rather than installed (no
# service is set up) and cached; a promtool already on PATH is used as is.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${APIGATE_PROMTOOL_CACHE:-$HOME/.cache/apigate-promtool}"
promtool="$(command -v promtool || true)"
if [ -z "$promtool" ]; then
  promtool="$CACHE/usr/bin/promtool"
  if [ ! -x "$promtool" ]; then
    echo "[promtool] fetching Debian's prometheus package for promtool" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    download="$(mktemp -d)"
    trap 'rm -rf "$download"' EXIT
    if ! (cd "$download" && apt-get download -qq prometheus >/dev/null 2>&1); then
      $sudo apt-get update -qq
      (cd "$download" && apt-get download -qq prometheus >/dev/null)
    fi
    mkdir -p "$CACHE"
    dpkg-deb -x "$download"/prometheus_*.deb "$CACHE"
  fi
fi
"$promtool" check rules manifests/monitoring/apigate-alerts.yaml
"$promtool" test rules manifests/monitoring/apigate-alerts.test.yaml
