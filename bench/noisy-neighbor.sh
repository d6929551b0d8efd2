#!/usr/bin/env bash
# Noisy-neighbour benchmark for the README: what flow control does for a well-behaved
# client while another client on the same route floods it with lists.
#
# Two client groups at once on one route (apigate-loadtest's neighbour group, reported
# apart):
#   quiet   QUIET_CLIENTS clients sending QUIET_RATE req/s of pod GETs in all (token
#           "quiet"), open loop: latency counted from each request's intended send time;
#   noisy   NOISY_CLIENTS clients of one identity (token "noisy") listing 50 pods (about
#           30 KB each), in two kinds of runs:
#           flood      open loop at NOISY_RATE req/s in all, whatever it is answered;
#           client-go  closed loop, NOISY_CONCURRENCY requests outstanding per client,
#                      each client waiting out a 429's Retry-After as client-go does
#                      (a controller re-listing in a loop).
# Targets, both pinned to CPU $PROXY_CPU (taskset), replicas and load on the other CPUs:
#   apigate             flow control off;
#   apigate-flow        a per-client token bucket on lists (NOISY_QPS, burst 2x).
# For each target: the quiet group alone, then with each kind of neighbour; ROUNDS rounds
# interleaved over the targets; medians. Reports the quiet group's p50 and p99 alone and
# with the neighbour, their ratio, the neighbour's answered lists per second and its
# 429s, and apigate's CPU per second.
#
# Usage: bench/noisy-neighbor.sh   (from the repo root; builds release binaries if needed)
# Knobs: QUIET_CLIENTS=10 QUIET_RATE=500 NOISY_CLIENTS=4 NOISY_RATE=8000
#        NOISY_CONCURRENCY=8 NOISY_QPS=5
#        DURATION=10s ROUNDS=3 PROXY_CPU=0
# Every process it starts is killed by pid on exit; ports are picked free; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

QUIET_CLIENTS=${QUIET_CLIENTS:-10}
QUIET_RATE=${QUIET_RATE:-500}
NOISY_CLIENTS=${NOISY_CLIENTS:-4}
NOISY_RATE=${NOISY_RATE:-8000}
NOISY_CONCURRENCY=${NOISY_CONCURRENCY:-8}
NOISY_QPS=${NOISY_QPS:-5}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
PROXY_CPU=${PROXY_CPU:-0}
# shellcheck source=bench/lib.sh
source bench/lib.sh
OTHER_CPUS=$(other_cpus "$PROXY_CPU")
bench_init noisy

taskset -c "$OTHER_CPUS" "$LOADTEST" backend -n 3 --service-time 0ms --list-size 50 \
  --out-dir "$TMP/backend" >"$TMP/backend.log" 2>&1 &
PIDS+=($!)
wait_backends "$TMP/backend"

# shellcheck source=bench/apigate-config.sh
source bench/apigate-config.sh
declare -A PID PORT
apigate_bench_start apigate
APIGATE_BENCH_DEFAULTS="flowControl: {policies: [{name: lists, match: {verbs: [list]}, qps: $NOISY_QPS, burst: $((NOISY_QPS * 2))}]}" \
  apigate_bench_start apigate-flow
for port in "${PORT[@]}"; do wait_port "$port"; done
TARGETS=(apigate apigate-flow)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

one() { # name round alone|flood|client-go -> "p50 p99 noisy_ok_per_s noisy_429 cpu_per_s errors"
  local name=$1 round=$2 neighbour=$3 out="$TMP/$1-$2-$3.json" before after extra=()
  case $neighbour in
    flood) extra=(--neighbor-rate "$NOISY_RATE") ;;
    client-go) extra=(--neighbor-concurrency "$NOISY_CONCURRENCY") ;;
  esac
  if [ "$neighbour" != alone ]; then
    extra+=(--neighbor-clients "$NOISY_CLIENTS" --neighbor-mix list=1 --neighbor-token noisy)
  fi
  before=$(cpu_ticks "${PID[$name]}")
  taskset -c "$OTHER_CPUS" "$LOADTEST" run -t "https://127.0.0.1:${PORT[$name]}" --sni localhost \
    --ca "$TMP/backend/ca.pem" --token quiet -c "$QUIET_CLIENTS" --mode open -r "$QUIET_RATE" \
    -d "$DURATION" --warmup 1s --mix get=1 --list-size 50 --json -q "${extra[@]}" \
    >"$out" 2>"$TMP/$1-$2-$3.log" || true
  after=$(cpu_ticks "${PID[$name]}")
  python3 - "$out" "$((after - before))" "$TICK" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
runs = data["runs"] if "runs" in data else [data]
quiet = runs[0]
noisy = runs[1] if len(runs) > 1 else None
seconds = quiet["measured_seconds"] or 1
ok = noisy["requests"]["ok"] / noisy["measured_seconds"] if noisy else 0
throttled = noisy["errors"].get("http_429", 0) if noisy else 0
cpu = int(sys.argv[2]) / int(sys.argv[3]) / (seconds + 1)
print(f'{quiet["latency_ms"]["p50"]:.3f} {quiet["latency_ms"]["p99"]:.3f} {ok:.0f} {throttled} {cpu:.2f} {quiet["requests"]["errors"]}')
PY
}

declare -A ROWS
for round in $(seq 1 "$ROUNDS"); do
  for name in "${TARGETS[@]}"; do
    for neighbour in alone flood client-go; do
      ROWS[$name/$neighbour]+="$(one "$name" "$round" "$neighbour")"$'\n'
    done
  done
done

echo
echo "Quiet group: $QUIET_CLIENTS clients, $QUIET_RATE req/s of pod GETs, open loop. Noisy neighbour: $NOISY_CLIENTS clients of one identity listing 50 pods, as a flood ($NOISY_RATE req/s, open loop) or client-go-like ($NOISY_CONCURRENCY outstanding per client, waiting out Retry-After). $DURATION per run, medians of $ROUNDS interleaved rounds; apigate pinned to CPU $PROXY_CPU, replicas and load on CPU(s) $OTHER_CPUS. apigate-flow: lists limited to $NOISY_QPS/s per client (burst $((NOISY_QPS * 2)))."
echo
echo "| target | neighbour | quiet p50 ms alone / with | quiet p99 ms alone / with | p99 ratio | neighbour lists answered/s | neighbour 429s | apigate CPU (cores) alone / with | quiet errors |"
echo "|---|---|---:|---:|---:|---:|---:|---|---:|"
for name in "${TARGETS[@]}"; do
  for neighbour in flood client-go; do
    python3 - "$name" "$neighbour" <<PY
import statistics, sys
alone = [l.split() for l in """${ROWS[$name/alone]}""".strip().splitlines()]
withn = [l.split() for l in """${ROWS[$name/$neighbour]}""".strip().splitlines()]
med = lambda rows, i: statistics.median(float(r[i]) for r in rows)
errors = int(sum(float(r[5]) for r in withn))
print(f"| {sys.argv[1]} | {sys.argv[2]} | {med(alone, 0):.2f} / {med(withn, 0):.2f} | {med(alone, 1):.2f} / {med(withn, 1):.2f} | {med(withn, 1) / med(alone, 1):.2f} | {med(withn, 2):,.0f} | {med(withn, 3):,.0f} | {med(alone, 4):.2f} / {med(withn, 4):.2f} | {errors} |")
PY
  done
done
