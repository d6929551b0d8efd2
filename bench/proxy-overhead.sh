#!/usr/bin/env bash
# Proxy overhead benchmark for the README: small GETs over TLS + HTTP/2 on loopback,
# measured side by side in ONE run against
#   direct   - one fake kube-apiserver replica, no proxy
#   apigate  - apigate terminating TLS, HTTP/2 upstream, per-request balancing over 3 replicas
#   haproxy  - HAProxy 2.6 (Debian) configured the same way (TLS termination, h2 both
#              sides, balance leastconn = least outstanding streams, per request)
# Load: h2load (nghttp2-client), closed loop, C connections x M concurrent streams,
# ROUNDS rounds per target interleaved (direct, apigate, haproxy, direct, ...) so drift on
# a shared machine hits all targets alike. Latency percentiles come from h2load's
# per-request log. The proxies run pinned to CPU $PROXY_CPU (taskset), the replicas and
# h2load to the other CPUs, and each proxy's CPU time (utime + stime from /proc/PID/stat)
# over a round gives its CPU cost per request: on a shared machine far steadier than
# throughput alone. Prints a Markdown table: median over rounds of req/s, p50, p99 and
# CPU µs per request.
#
# Usage: bench/proxy-overhead.sh   (from the repo root; builds release binaries if needed)
# Knobs: REQUESTS=100000 CLIENTS=10 STREAMS=10 ROUNDS=3 PROXY_CPU=0
#        APIGATE_BASELINE=/path/to/another/apigate  (also measure that build, as
#        "apigate-baseline", e.g. the previous commit's, side by side in the same run)
# Every process it starts is killed by pid on exit; ports are picked free; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-100000}
PROXY_CPU=${PROXY_CPU:-0}
OTHER_CPUS=$(python3 -c "import os; print(','.join(str(c) for c in sorted(os.sched_getaffinity(0)) if c != $PROXY_CPU) or '$PROXY_CPU')")
BASELINE=${APIGATE_BASELINE:-}
CLIENTS=${CLIENTS:-10}
STREAMS=${STREAMS:-10}
ROUNDS=${ROUNDS:-3}
HAPROXY=${HAPROXY:-/usr/sbin/haproxy}
# shellcheck source=bench/lib.sh
source bench/lib.sh

command -v h2load >/dev/null || { echo "needs h2load (apt-get install nghttp2-client)" >&2; exit 1; }
[ -x "$HAPROXY" ] || { echo "needs HAProxy at $HAPROXY (apt-get install haproxy)" >&2; exit 1; }
bench_init overhead

# 1. Three fake replicas (TLS, h2 + http/1.1), certificates in $TMP/backend.
taskset -c "$OTHER_CPUS" "$LOADTEST" backend -n 3 --service-time 0ms --out-dir "$TMP/backend" >"$TMP/backend.log" 2>&1 &
PIDS+=($!)
wait_backends "$TMP/backend"

# 2. apigate, same certificates: serving cert for localhost, replicas verified.
AG_PORT=$(free_port)
# shellcheck source=bench/apigate-config.sh
source bench/apigate-config.sh
apigate_bench_config "127.0.0.1:$AG_PORT" "$TMP/backend/server.pem" "$TMP/backend/server-key.pem" \
  "$TMP/backend/ca.pem" "${BACKENDS[@]}" >"$TMP/apigate.yaml"
taskset -c "$PROXY_CPU" "$APIGATE" --log warn run --config "$TMP/apigate.yaml" >"$TMP/apigate.log" 2>&1 &
PIDS+=($!)
declare -A PID=([apigate]=$!)
if [ -n "$BASELINE" ]; then
  BASE_PORT=$(free_port)
  apigate_bench_config "127.0.0.1:$BASE_PORT" "$TMP/backend/server.pem" "$TMP/backend/server-key.pem" \
    "$TMP/backend/ca.pem" "${BACKENDS[@]}" >"$TMP/apigate-baseline.yaml"
  taskset -c "$PROXY_CPU" "$BASELINE" --log warn run --config "$TMP/apigate-baseline.yaml" >"$TMP/apigate-baseline.log" 2>&1 &
  PIDS+=($!)
  PID[apigate-baseline]=$!
fi

# 3. HAProxy, configured the same way.
HA_PORT=$(free_port)
{
  cat <<CFG
global
  maxconn 4096
  nbthread 1
  ssl-server-verify required
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  bind 127.0.0.1:$HA_PORT ssl crt $TMP/backend/server-bundle.pem alpn h2,http/1.1
  default_backend be
backend be
  balance leastconn
  http-reuse always
CFG
  i=0
  for b in "${BACKENDS[@]}"; do
    echo "  server r$i $b ssl verify required ca-file $TMP/backend/ca.pem sni str(localhost) alpn h2"
    i=$((i + 1))
  done
} >"$TMP/haproxy.cfg"
taskset -c "$PROXY_CPU" "$HAPROXY" -f "$TMP/haproxy.cfg" -db >"$TMP/haproxy.log" 2>&1 &
PIDS+=($!)
PID[haproxy]=$!

wait_port "$AG_PORT"; wait_port "$HA_PORT"
[ -n "$BASELINE" ] && wait_port "$BASE_PORT"
DIRECT_PORT=${BACKENDS[0]##*:}

declare -A URL=(
  [direct]="https://localhost:$DIRECT_PORT/version"
  [apigate]="https://localhost:$AG_PORT/version"
  [haproxy]="https://localhost:$HA_PORT/version"
)
TARGETS=(direct apigate haproxy)
if [ -n "$BASELINE" ]; then
  URL[apigate-baseline]="https://localhost:$BASE_PORT/version"
  TARGETS=(direct apigate apigate-baseline haproxy)
fi

# CPU time (utime + stime, clock ticks) of a process and its threads so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

run_one() { # name round -> "rps p50_ms p99_ms errors cpu_us_per_request"
  local name=$1 round=$2 log="$TMP/$1-$2.log"
  local out before=0 after=0 pid=${PID[$1]:-}
  [ -n "$pid" ] && before=$(cpu_ticks "$pid")
  out=$(taskset -c "$OTHER_CPUS" h2load -n "$REQUESTS" -c "$CLIENTS" -m "$STREAMS" -t 1 --log-file="$log" "${URL[$name]}" 2>&1)
  [ -n "$pid" ] && after=$(cpu_ticks "$pid")
  local rps errors
  rps=$(awk '/finished in/ {gsub(",", "", $4); print $4}' <<<"$out")
  errors=$(awk '/^requests:/ {print $10 + $12}' <<<"$out")
  python3 - "$log" "$rps" "$errors" "$((after - before))" "$TICK" "$REQUESTS" <<'PY'
import sys
durations = sorted(int(line.split("\t")[2]) for line in open(sys.argv[1]) if line.strip())
def pct(p): return durations[min(len(durations) - 1, int(p / 100 * len(durations)))] / 1000
ticks, per_second, requests = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
cpu = ticks / per_second * 1e6 / requests
print(sys.argv[2], f"{pct(50):.3f}", f"{pct(99):.3f}", sys.argv[3], f"{cpu:.1f}")
PY
}

# Warm-up (TLS session setup, pools), then interleaved rounds.
for name in "${TARGETS[@]}"; do REQUESTS=5000 run_one "$name" warm >/dev/null; done
declare -A RESULTS
for round in $(seq 1 "$ROUNDS"); do
  for name in "${TARGETS[@]}"; do
    RESULTS[$name]+="$(run_one "$name" "$round")"$'\n'
  done
done

echo
echo "Small GETs (/version), TLS + HTTP/2, $CLIENTS connections x $STREAMS streams, $REQUESTS requests per round, median of $ROUNDS rounds; proxies pinned to CPU $PROXY_CPU, replicas and h2load to CPU(s) $OTHER_CPUS. CPU µs/request: the proxy process's own CPU time (for direct: not measured)."
echo
echo "| target | requests/s | p50 ms | p99 ms | CPU µs/request | errors |"
echo "|---|---:|---:|---:|---:|---:|"
for name in "${TARGETS[@]}"; do
  python3 - "$name" <<PY
import statistics, sys
rows = [l.split() for l in """${RESULTS[$name]}""".strip().splitlines()]
med = lambda i: statistics.median(float(r[i]) for r in rows)
cpu = "" if sys.argv[1] == "direct" else f"{med(4):.1f}"
print(f"| {sys.argv[1]} | {med(0):,.0f} | {med(1):.2f} | {med(2):.2f} | {cpu} | {int(sum(float(r[3]) for r in rows))} |")
PY
done
