#!/usr/bin/env bash
# The README's first command: build apigate and run `apigate demo` (3 fake
# kube-apiserver replicas + apigate on loopback, generated certificates).
# Extra arguments go to `apigate demo`, e.g. `--requests 300` or `--replicas 5`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec cargo run --release --locked -p apigate -- demo "$@"
