#!/usr/bin/env bash
# Measures apigate-loadtest's own ceiling: requests/s it can drive from ONE core
# (current-thread runtime, pinned with taskset) against a fast fake backend pinned to
# another core. Prints the CPU use of both, so you can see which one was the bottleneck.
# First a closed loop (the maximum), then open loops at fractions of it: the open-loop
# rate the generator sustains with a small send lag is its usable ceiling.
#
# Usage: bench/ceiling.sh     (from the repo root; needs 2 cores)
# Knobs: GEN_CPU=0 BACKEND_CPU=1 DURATION=10s WARMUP=2s CLIENTS=4 CONCURRENCY=64 HTTP=h2
#        MIX=get=1 LOADTEST=target/release/apigate-loadtest
#        PLAIN=1 (backend serves h2c; takes TLS cost off both sides)
#        PCTS="50 65 80 100" (open-loop rates, % of the closed-loop throughput)
set -euo pipefail

GEN_CPU=${GEN_CPU:-0}
BACKEND_CPU=${BACKEND_CPU:-1}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CLIENTS=${CLIENTS:-4}
CONCURRENCY=${CONCURRENCY:-64}
HTTP=${HTTP:-h2}
MIX=${MIX:-get=1}
LOADTEST=${LOADTEST:-target/release/apigate-loadtest}
PLAIN=${PLAIN:-}
PCTS=${PCTS:-50 65 80 100}

PIDS=()
TMP=$(mktemp -d "${TMPDIR:-/tmp}/apigate-ceiling.XXXXXX")
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
die() { echo "ceiling.sh: $*" >&2; exit 1; }

[[ -x "$LOADTEST" ]] || cargo build --release -p apigate-loadtest
TICK=$(getconf CLK_TCK)
secs() { python3 -c "import sys; s=sys.argv[1]; u={'ms':1e-3,'s':1,'m':60}; n=s.rstrip('ms'); print(float(s[:-2])*1e-3 if s.endswith('ms') else float(s[:-1])*u[s[-1]])" "$1"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

taskset -c "$BACKEND_CPU" "$LOADTEST" backend --replicas 1 --service-time 0 --list-size 1 \
  --object-bytes 16 --out-dir "$TMP/b" ${PLAIN:+--plain} >"$TMP/backend.log" 2>&1 &
BPID=$!
PIDS+=("$BPID")
for _ in $(seq 1 100); do [[ -s "$TMP/b/backends.env" ]] && break; sleep 0.1; done
[[ -s "$TMP/b/backends.env" ]] || die "backend did not start"
# shellcheck disable=SC1091
source "$TMP/b/backends.env"
URL=${REPLICA_URLS%% *}

# run LABEL extra-args...: one pinned, single-threaded run; prints rps, latency, send lag, CPU.
run() {
  local label=$1; shift
  taskset -c "$GEN_CPU" "$LOADTEST" --current-thread run -t "$URL" ${CA:+--ca "$CA"} --http "$HTTP" \
    --clients "$CLIENTS" --mix "$MIX" --warmup "$WARMUP" --duration "$DURATION" -q --json "$@" \
    >"$TMP/$label.json" 2>"$TMP/$label.txt" &
  local gpid=$!
  PIDS+=("$gpid")
  sleep "$(secs "$WARMUP")"; sleep 0.5
  local g0 b0 g1 b1 window
  g0=$(cpu_ticks "$gpid"); b0=$(cpu_ticks "$BPID")
  window=$(python3 -c "print(max(1.0, $(secs "$DURATION") - 3.0))")
  sleep "$window"
  kill -0 "$gpid" 2>/dev/null || { cat "$TMP/$label.txt" >&2; die "generator exited early"; }
  g1=$(cpu_ticks "$gpid"); b1=$(cpu_ticks "$BPID")
  wait "$gpid" || true
  python3 - "$TMP/$label.json" "$label" "$(( g1 - g0 ))" "$(( b1 - b0 ))" "$TICK" "$window" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
label, g, b, tick, window = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
l, q, lag = r["latency_ms"], r["requests"], r["send_lag_ms"]
print(f"{label:<22} {q['throughput_rps']:>9.0f} req/s  errors {q['errors']:>5}  p50 {l['p50']:7.3f}  p99 {l['p99']:7.3f} ms"
      f"  send-lag p99 {lag['p99']:7.3f} ms  cpu: generator {100*g/tick/window:4.0f}%  backend {100*b/tick/window:4.0f}%"
      + (f"  errors by kind {r['errors']} e.g. {r['error_examples']}" if r['errors'] else ""))
PY
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) (should be near 0: other processes on these CPUs skew the result)"
echo "apigate-loadtest ceiling: generator on CPU $GEN_CPU (--current-thread), fake backend on CPU $BACKEND_CPU, $HTTP${PLAIN:+ (plaintext h2c)}, $CLIENTS clients, mix $MIX"
run closed --mode closed --concurrency "$CONCURRENCY"
MAX=$(python3 -c "import json; print(int(json.load(open('$TMP/closed.json'))['requests']['throughput_rps']))")
for pct in $PCTS; do
  rate=$(( MAX * pct / 100 ))
  run "open-${pct}pct-${rate}" --rate "$rate"
done
