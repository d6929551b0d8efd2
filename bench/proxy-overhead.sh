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
# throughput alone. Three measurements, each side by side:
#   closed loop  h2load at saturation: req/s, p50, p99, CPU µs per request, for small
#                GETs of /version and, in a second table, for each of WORKLOADS: `list`
#                (a LIST of 50 pods, about 30 KB) and `post` (512-byte POSTs creating pods);
#   open loop    apigate-loadtest at a fixed rate below saturation (OPEN_RATE, 10
#                clients, small GETs of a pod): p50 and p99 from each request's intended
#                send time, and CPU µs per request;
#   idle memory  IDLE_CONNS TLS + HTTP/2 connections, each used for one request and then
#                held idle (bench/idle-conns.py): the proxy's resident memory growth per
#                connection, measured once per proxy after the warm-up only.
# Prints a Markdown table of the medians over the interleaved rounds.
#
# Usage: bench/proxy-overhead.sh   (from the repo root; builds release binaries if needed)
# Knobs: REQUESTS=100000 CLIENTS=10 STREAMS=10 ROUNDS=3 PROXY_CPU=0
#        OPEN_RATE=1500 OPEN_DURATION=10s IDLE_CONNS=3000 WORKLOADS="list post"
#        APIGATE_BASELINE=/path/to/another/apigate  (also measure that build, as
#        "apigate-baseline", e.g. the previous commit's, side by side in the same run)
#        ACCESS_LOG=1  also apigate with the access log on (every request, JSON, to a
#        file), pinned like apigate, as "apigate-access-log"
#        FLOW_CONTROL=1  also apigate with flow control on, limits it never reaches (a
#        route cap and a per-client token bucket over every request), as
#        "apigate-flow-control": the cost of the decision on every request
#        SCALING=1  also apigate with --workers 2 on all CPUs ("apigate-2-workers", the
#        load and replicas sharing them): its req/s over the pinned one-worker apigate's
# Every process it starts is killed by pid on exit; ports are picked free; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-100000}
PROXY_CPU=${PROXY_CPU:-0}
BASELINE=${APIGATE_BASELINE:-}
CLIENTS=${CLIENTS:-10}
STREAMS=${STREAMS:-10}
ROUNDS=${ROUNDS:-3}
OPEN_RATE=${OPEN_RATE:-1500}
OPEN_DURATION=${OPEN_DURATION:-10s}
IDLE_CONNS=${IDLE_CONNS:-3000}
SCALING=${SCALING:-}
ACCESS_LOG=${ACCESS_LOG:-}
FLOW_CONTROL=${FLOW_CONTROL:-}
WORKLOADS=${WORKLOADS-list post}
HAPROXY=${HAPROXY:-/usr/sbin/haproxy}
# shellcheck source=bench/lib.sh
source bench/lib.sh
OTHER_CPUS=$(other_cpus "$PROXY_CPU")

command -v h2load >/dev/null || { echo "needs h2load (apt-get install nghttp2-client)" >&2; exit 1; }
[ -x "$HAPROXY" ] || { echo "needs HAProxy at $HAPROXY (apt-get install haproxy)" >&2; exit 1; }
bench_init overhead

# 1. Three fake replicas (TLS, h2 + http/1.1), certificates in $TMP/backend.
taskset -c "$OTHER_CPUS" "$LOADTEST" backend -n 3 --service-time 0ms --list-size 50 \
  --out-dir "$TMP/backend" >"$TMP/backend.log" 2>&1 &
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
declare -A PORT=([apigate]=$AG_PORT)
if [ -n "$SCALING" ]; then
  SCALE_PORT=$(free_port)
  apigate_bench_config "127.0.0.1:$SCALE_PORT" "$TMP/backend/server.pem" "$TMP/backend/server-key.pem" \
    "$TMP/backend/ca.pem" "${BACKENDS[@]}" >"$TMP/apigate-2-workers.yaml"
  "$APIGATE" --log warn --workers 2 run --config "$TMP/apigate-2-workers.yaml" >"$TMP/apigate-2-workers.log" 2>&1 &
  PIDS+=($!)
  PID[apigate-2-workers]=$!
  PORT[apigate-2-workers]=$SCALE_PORT
fi
if [ -n "$ACCESS_LOG" ]; then
  APIGATE_BENCH_GATEWAY="accessLog: {enabled: true, path: $TMP/access.log}" \
    apigate_bench_start apigate-access-log
fi
if [ -n "$FLOW_CONTROL" ]; then
  APIGATE_BENCH_DEFAULTS="flowControl: {maxInFlight: 100000, policies: [{name: all, qps: 1000000, burst: 1000000}]}" \
    apigate_bench_start apigate-flow-control
fi
if [ -n "$BASELINE" ]; then
  BASE_PORT=$(free_port)
  apigate_bench_config "127.0.0.1:$BASE_PORT" "$TMP/backend/server.pem" "$TMP/backend/server-key.pem" \
    "$TMP/backend/ca.pem" "${BACKENDS[@]}" >"$TMP/apigate-baseline.yaml"
  taskset -c "$PROXY_CPU" "$BASELINE" --log warn run --config "$TMP/apigate-baseline.yaml" >"$TMP/apigate-baseline.log" 2>&1 &
  PIDS+=($!)
  PID[apigate-baseline]=$!
  PORT[apigate-baseline]=$BASE_PORT
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
PORT[haproxy]=$HA_PORT

for port in "${PORT[@]}"; do wait_port "$port"; done
DIRECT_PORT=${BACKENDS[0]##*:}
PORT[direct]=$DIRECT_PORT

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
for variant in apigate-access-log apigate-flow-control; do
  if [ -n "${PORT[$variant]:-}" ]; then
    URL[$variant]="https://localhost:${PORT[$variant]}/version"
    TARGETS+=("$variant")
  fi
done
if [ -n "$SCALING" ]; then
  URL[apigate-2-workers]="https://localhost:$SCALE_PORT/version"
  TARGETS+=(apigate-2-workers)
fi

# CPU time (utime + stime, clock ticks) of a process and its threads so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# A 512-byte pod for the `post` workload.
python3 -c 'import json; pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bench", "annotations": {"pad": ""}}}; base = len(json.dumps(pod)); pod["metadata"]["annotations"]["pad"] = "x" * (512 - base); print(json.dumps(pod), end="")' >"$TMP/pod.json"

run_one() { # name round [workload] -> "rps p50_ms p99_ms errors cpu_us_per_request"
  local name=$1 round=$2 workload=${3:-version} log="$TMP/$1-$2-${3:-version}.log"
  local out before=0 after=0 pid=${PID[$1]:-} url=${URL[$1]} extra=()
  case $workload in
    list) url=${url%/version}/api/v1/namespaces/default/pods ;;
    post) url=${url%/version}/api/v1/namespaces/default/pods
          extra=(-d "$TMP/pod.json" -H "content-type: application/json") ;;
  esac
  [ -n "$pid" ] && before=$(cpu_ticks "$pid")
  out=$(taskset -c "$OTHER_CPUS" h2load -n "$REQUESTS" -c "$CLIENTS" -m "$STREAMS" -t 1 "${extra[@]}" --log-file="$log" "$url" 2>&1)
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

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

idle_one() { # name -> KiB of resident memory per idle connection
  local name=$1 pid=${PID[$1]} before after fifo="$TMP/idle-$1.fifo"
  before=$(rss_kib "$pid")
  mkfifo "$fifo"
  taskset -c "$OTHER_CPUS" python3 bench/idle-conns.py 127.0.0.1 "${PORT[$name]}" localhost \
    "$TMP/backend/ca.pem" "$IDLE_CONNS" <"$fifo" >"$TMP/idle-$1.out" 2>&1 &
  local holder=$!
  exec 9>"$fifo"
  for _ in $(seq 1 600); do grep -q '^ready' "$TMP/idle-$1.out" && break; sleep 0.1; done
  grep -q '^ready' "$TMP/idle-$1.out" || { cat "$TMP/idle-$1.out" >&2; exit 1; }
  sleep 1
  after=$(rss_kib "$pid")
  exec 9>&-
  wait "$holder"
  rm -f "$fifo"
  echo $(((after - before) / IDLE_CONNS))
}

open_one() { # name round -> "p50_ms p99_ms cpu_us_per_request"
  local name=$1 round=$2 before=0 after=0 pid=${PID[$1]:-} out="$TMP/open-$1-$2.json"
  [ -n "$pid" ] && before=$(cpu_ticks "$pid")
  taskset -c "$OTHER_CPUS" "$LOADTEST" run -t "https://127.0.0.1:${PORT[$name]}" --sni localhost \
    --ca "$TMP/backend/ca.pem" -c 10 --mode open -r "$OPEN_RATE" -d "$OPEN_DURATION" --warmup 1s \
    --mix get=1 --json >"$out" 2>"$TMP/open-$1-$2.log"
  [ -n "$pid" ] && after=$(cpu_ticks "$pid")
  python3 - "$out" "$((after - before))" "$TICK" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
latency, requests = run["latency_ms"], run["requests"]
# The CPU was read around warm-up and measurement; count the warm-up's requests too.
sent = requests["ok"] + requests["errors"] + run["scenario"]["rate"] * run["scenario"]["warmup"]
cpu = int(sys.argv[2]) / int(sys.argv[3]) * 1e6 / sent
print(f"{latency['p50']:.3f}", f"{latency['p99']:.3f}", f"{cpu:.1f}", requests["errors"])
PY
}

# Warm-up (TLS session setup, pools), then the idle-memory figure, then interleaved
# rounds: closed loop, then open loop.
for name in "${TARGETS[@]}"; do REQUESTS=5000 run_one "$name" warm >/dev/null; done
declare -A IDLE
for name in "${TARGETS[@]}"; do
  [ "$name" = direct ] || [ "$name" = apigate-2-workers ] || IDLE[$name]=$(idle_one "$name")
done
declare -A RESULTS OPEN
for round in $(seq 1 "$ROUNDS"); do
  for name in "${TARGETS[@]}"; do
    RESULTS[$name]+="$(run_one "$name" "$round")"$'\n'
  done
done
declare -A EXTRA
for workload in $WORKLOADS; do
  for round in $(seq 1 "$ROUNDS"); do
    for name in "${TARGETS[@]}"; do
      EXTRA[$name/$workload]+="$(run_one "$name" "$round" "$workload")"$'\n'
    done
  done
done
for round in $(seq 1 "$ROUNDS"); do
  for name in "${TARGETS[@]}"; do
    OPEN[$name]+="$(open_one "$name" "$round")"$'\n'
  done
done

echo
echo "Closed loop: small GETs (/version), TLS + HTTP/2, $CLIENTS connections x $STREAMS streams, $REQUESTS requests per round. Open loop: $OPEN_RATE req/s of pod GETs from 10 clients for $OPEN_DURATION per round. Medians of $ROUNDS interleaved rounds; proxies pinned to CPU $PROXY_CPU (apigate-2-workers: all CPUs), replicas and load to CPU(s) $OTHER_CPUS. CPU µs/request: the proxy process's own CPU time (for direct: not measured). Idle: resident memory growth per idle TLS + HTTP/2 connection, $IDLE_CONNS held, once per proxy."
echo
echo "| target | closed loop req/s | p50 ms | p99 ms | CPU µs/request | open loop p50 ms | p99 ms | CPU µs/request | idle KiB/connection | errors |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for name in "${TARGETS[@]}"; do
  python3 - "$name" "${IDLE[$name]:-}" <<PY
import statistics, sys
rows = [l.split() for l in """${RESULTS[$name]}""".strip().splitlines()]
opens = [l.split() for l in """${OPEN[$name]}""".strip().splitlines()]
med = lambda rs, i: statistics.median(float(r[i]) for r in rs)
proxy = sys.argv[1] != "direct"
cpu = f"{med(rows, 4):.1f}" if proxy else ""
open_cpu = f"{med(opens, 2):.1f}" if proxy else ""
errors = int(sum(float(r[3]) for r in rows) + sum(float(r[3]) for r in opens))
print(f"| {sys.argv[1]} | {med(rows, 0):,.0f} | {med(rows, 1):.2f} | {med(rows, 2):.2f} | {cpu} | {med(opens, 0):.2f} | {med(opens, 1):.2f} | {open_cpu} | {sys.argv[2]} | {errors} |")
PY
done
if [ -n "$WORKLOADS" ]; then
  echo
  echo "Closed loop, other workloads (same connections, streams and requests per round):"
  echo
  echo "| target | workload | requests/s | p50 ms | p99 ms | CPU µs/request | errors |"
  echo "|---|---|---:|---:|---:|---:|---:|"
  for workload in $WORKLOADS; do
    for name in "${TARGETS[@]}"; do
      python3 - "$name" "$workload" <<PY
import statistics, sys
rows = [l.split() for l in """${EXTRA[$name/$workload]}""".strip().splitlines()]
med = lambda i: statistics.median(float(r[i]) for r in rows)
cpu = f"{med(4):.1f}" if sys.argv[1] != "direct" else ""
print(f"| {sys.argv[1]} | {sys.argv[2]} | {med(0):,.0f} | {med(1):.2f} | {med(2):.2f} | {cpu} | {int(sum(float(r[3]) for r in rows))} |")
PY
    done
  done
fi
if [ -n "$SCALING" ]; then
  python3 - <<PY
import statistics
one = statistics.median(float(l.split()[0]) for l in """${RESULTS[apigate]}""".strip().splitlines())
two = statistics.median(float(l.split()[0]) for l in """${RESULTS[apigate-2-workers]}""".strip().splitlines())
print(f"\napigate, 1 -> 2 workers: {two / one:.2f}x the closed-loop req/s")
PY
fi
