#!/usr/bin/env bash
# apigate's fuzz targets (fuzz/, libFuzzer through cargo-fuzz).
#
#   bash scripts/fuzz.sh build           build every target (what the test command runs)
#   bash scripts/fuzz.sh run TARGET      10,000,000 executions or 30 minutes, whichever
#                                        comes first; new inputs go to fuzz/corpus/TARGET
#   bash scripts/fuzz.sh all             run every target in turn
#   bash scripts/fuzz.sh cmin TARGET     minimise TARGET's corpus before committing it
#
# cargo-fuzz passes rustc -Z flags (sanitizer, coverage instrumentation) that only a
# nightly toolchain accepts; RUSTC_BOOTSTRAP=1 makes the stable toolchain accept them.
# A crash is written to fuzz/artifacts/TARGET/: copy it to fuzz/regressions/TARGET/,
# where the test suite replays it (proxy/tests/integration/fuzz_corpus.rs), then fix it.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
TARGETS=(proxy_header connect_request client_hello config)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "[fuzz] installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --version 0.13.2
fi

# The longest input each target needs: past its reader's own bound.
max_len() {
  case "$1" in
    connect_request) echo 20000 ;;  # CONNECT heads: 16 KiB bound
    *) echo 8192 ;;                 # PROXY v2: 4,112 bytes; ClientHellos; configurations
  esac
}

run() {
  local target=$1
  (cd fuzz && cargo fuzz run -O "$target" -- -runs=10000000 -max_total_time=1800 \
    -max_len="$(max_len "$target")" -print_final_stats=1)
}

case "${1:-build}" in
  build) (cd fuzz && cargo fuzz build --dev) ;;
  run) run "${2:?target: ${TARGETS[*]}}" ;;
  all) for t in "${TARGETS[@]}"; do run "$t"; done ;;
  cmin) (cd fuzz && cargo fuzz cmin -O "${2:?target: ${TARGETS[*]}}" -- -max_len="$(max_len "$2")") ;;
  *) echo "usage: $0 build | run TARGET | all | cmin TARGET" >&2; exit 2 ;;
esac
