#!/usr/bin/env bash
# apigate's test command: everything, on a bare Debian bookworm machine (as root).
#
#   1. system packages the build needs (cmake for pingora's zlib-ng, a C toolchain);
#   2. the end-to-end testbed: etcd, kubectl 1.20 and kube-apiserver 1.20.2 built from
#      Debian's source package (cached after the first run, ~7 min on 2 cores);
#   3. formatting and lints, and promtool on the shipped alert rules;
#   4. unit and in-process integration tests (real TLS, HTTP/2, fake replicas), which
#      also replay the fuzz corpora and past crashes;
#   5. end-to-end tests through apigate against 3 real kube-apiserver replicas;
#   6. the fuzz targets built with cargo-fuzz (runs are long: scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh

echo "[run.sh] testbed install (cached after the first run)"
bash tests/testbed/testbed.sh install

echo "[run.sh] cargo fmt --check"
cargo fmt --all -- --check
echo "[run.sh] cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "[run.sh] promtool: alert rules and their unit tests"
bash scripts/promtool.sh
echo "[run.sh] unit and integration tests"
cargo test --workspace --exclude apigate-e2e --locked
echo "[run.sh] end-to-end tests (real kube-apiserver testbed)"
cargo test -p apigate-e2e --locked
echo "[run.sh] fuzz targets build (cargo-fuzz, instrumented)"
bash scripts/fuzz.sh build
