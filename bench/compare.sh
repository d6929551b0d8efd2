#!/usr/bin/env bash
# Reproducible balancing comparison for the README's performance section.
#
# Starts, all on loopback with ports picked at runtime:
#   - 3 fake kube-apiserver replicas (`apigate-loadtest backend`, TLS, h2 + http/1.1),
#   - the L4 baseline (`apigate-loadtest l4-baseline`: TCP round robin per connection,
#     TLS passes through — what an L4 balancer / TLS passthrough does),
#   - apigate L7 (TLS termination, HTTP/2 upstream, per-request least-request balancing),
#   - HAProxy 2.6 (Debian) terminating TLS and balancing every HTTP/2 stream,
# then runs `apigate-loadtest compare` over direct / l4-baseline / apigate / haproxy RUNS
# times (the same processes throughout), prints each run's table (per-replica shares, CV,
# latency) and then the range of each figure over the runs: HAProxy's leastconn spread
# varies from run to run, apigate's does not. Every process it starts is killed by pid on
# exit.
#
# Usage: bench/compare.sh            (from the repo root; builds release binaries if needed)
# Knobs (environment):
#   RUNS=3 CLIENTS=6 RATE=1500 DURATION=20s WARMUP=3s SKEW=1.0 WATCHES=1 MIX=get=70,list=10,create=10,patch=10
#   SERVICE_TIME=exp:2ms LIST_SIZE=50 OBJECT_BYTES=512
#   OUT_DIR=target/bench   LOADTEST=target/release/apigate-loadtest   HAPROXY=/usr/sbin/haproxy
#   HAPROXY_BALANCE=leastconn (or roundrobin, random, ...)
#   APIGATE_BIN=target/release/apigate   LOADGEN_CPUS=0 TARGET_CPUS=1   (optional taskset pinning)
#   KEEP_TMP=1 (keep the temp dir with logs, certificates and haproxy.cfg)
#
# Why these defaults: client-go keeps ONE HTTP/2 connection per process and real control
# planes have a few heavy clients (controller-manager, operators) and many light ones.
# SKEW=1.0 gives client c a load weight of 1/(c+1). An L4 balancer can only place
# connections, so the heavy client's whole load lands on one replica; an L7 balancer
# places every request.
set -euo pipefail

RUNS=${RUNS:-3}
CLIENTS=${CLIENTS:-6}
RATE=${RATE:-1500}
DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-3s}
SKEW=${SKEW:-1.0}
WATCHES=${WATCHES:-1}
MIX=${MIX:-get=70,list=10,create=10,patch=10}
SERVICE_TIME=${SERVICE_TIME:-exp:2ms}
LIST_SIZE=${LIST_SIZE:-50}
OBJECT_BYTES=${OBJECT_BYTES:-512}
OUT_DIR=${OUT_DIR:-target/bench}
LOADTEST=${LOADTEST:-target/release/apigate-loadtest}
HAPROXY=${HAPROXY:-/usr/sbin/haproxy}
HAPROXY_BALANCE=${HAPROXY_BALANCE:-leastconn}
APIGATE_BIN=${APIGATE_BIN:-target/release/apigate}
LOADGEN_CPUS=${LOADGEN_CPUS:-}
TARGET_CPUS=${TARGET_CPUS:-}

PIDS=()
TMP=$(mktemp -d "${TMPDIR:-/tmp}/apigate-bench.XXXXXX")

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    # bounded wait: 5 s, then KILL
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ -n "${KEEP_TMP:-}" ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "compare.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# Optional CPU pinning as a command prefix (taskset execs the command, so `$!` is still
# the pid of the process itself — a shell function here would put a subshell in between).
PIN_TARGET=()
PIN_LOADGEN=()
[[ -n "$TARGET_CPUS" ]] && PIN_TARGET=(taskset -c "$TARGET_CPUS")
[[ -n "$LOADGEN_CPUS" ]] && PIN_LOADGEN=(taskset -c "$LOADGEN_CPUS")

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_for_file() { # path: up to 10 s
  for _ in $(seq 1 100); do
    [[ -s "$1" ]] && return 0
    sleep 0.1
  done
  die "timed out waiting for $1"
}

wait_for_port() { # port [pid]: up to 10 s; fails early if pid exits
  for _ in $(seq 1 100); do
    if [[ -n "${2:-}" ]] && ! kill -0 "$2" 2>/dev/null; then
      die "process $2 exited before listening on 127.0.0.1:$1"
    fi
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  die "timed out waiting for 127.0.0.1:$1"
}

command -v python3 >/dev/null || die "python3 is needed to pick free ports"
[[ -x "$HAPROXY" ]] || die "HAProxy not found at $HAPROXY (apt-get install haproxy)"
if [[ ! -x "$LOADTEST" ]]; then
  log "building $LOADTEST"
  cargo build --release -p apigate-loadtest
fi
mkdir -p "$OUT_DIR"

# --- 3 fake replicas --------------------------------------------------------------------
"${PIN_TARGET[@]}" "$LOADTEST" backend --replicas 3 --service-time "$SERVICE_TIME" \
  --list-size "$LIST_SIZE" --object-bytes "$OBJECT_BYTES" --out-dir "$TMP/backend" \
  >"$TMP/backend.log" 2>&1 &
PIDS+=($!)
wait_for_file "$TMP/backend/backends.env"
# shellcheck disable=SC1091
source "$TMP/backend/backends.env"   # CA, SERVER_BUNDLE, SERVER_CERT, SERVER_KEY, REPLICA_IDS, REPLICA_ADDRS, ADMIN
read -r -a ADDRS <<<"$REPLICA_ADDRS"
log "replicas: $REPLICA_ADDRS"

# --- (a) L4 baseline ----------------------------------------------------------------------
"${PIN_TARGET[@]}" "$LOADTEST" l4-baseline --backend "$(IFS=,; echo "${ADDRS[*]}")" \
  --addr-file "$TMP/l4.addr" >"$TMP/l4.log" 2>&1 &
PIDS+=($!)
wait_for_file "$TMP/l4.addr"
L4_URL="https://$(cat "$TMP/l4.addr")"
log "l4-baseline: $L4_URL"

# --- (b) apigate L7 -------------------------------------------------------------------------
# apigate terminates TLS with the replicas' certificate (names localhost, 127.0.0.1),
# verifies the replicas with $CA, speaks HTTP/2 upstream and balances every request
# (least outstanding requests, two random choices). Clients reach it by the name
# "localhost" (SNI selects the route); the listener is dual-stack so either resolution works.
start_apigate() {
  APIGATE_URL=""
  if [[ ! -x "$APIGATE_BIN" ]]; then
    log "building $APIGATE_BIN"
    cargo build --release -p apigate
  fi
  APIGATE_PORT=$(free_port)
  # shellcheck source=bench/apigate-config.sh
  source "$(dirname "$0")/apigate-config.sh"
  apigate_bench_config "[::]:${APIGATE_PORT}" "$SERVER_CERT" "$SERVER_KEY" "$CA" "${ADDRS[@]}" >"$TMP/apigate.yaml"
  "${PIN_TARGET[@]}" "$APIGATE_BIN" --log warn run --config "$TMP/apigate.yaml" >"$TMP/apigate.log" 2>&1 &
  PIDS+=($!)
  wait_for_port "$APIGATE_PORT" "$!" || { cat "$TMP/apigate.log" >&2; exit 1; }
  APIGATE_URL="https://localhost:$APIGATE_PORT"
  log "apigate: $APIGATE_URL"
}
start_apigate

# --- (c) HAProxy 2.6: TLS termination, per-request (per-stream) balancing -------------------
# In `mode http` every request — every HTTP/2 stream of a client connection — is its own
# HAProxy stream and is load-balanced on its own, as long as `option prefer-last-server`
# is off (the default). `balance leastconn` counts a server's *active streams*, i.e. it
# is least-outstanding-requests. `http-reuse always` lets streams of different client
# connections share the HTTP/2 connections to a replica; with the default `safe`, an h2
# server connection carrying a stream stays reserved for the same client connection.
HAPROXY_PORT=$(free_port)
cat >"$TMP/haproxy.cfg" <<CFG
global
    # stays below common FD limits (HAProxy needs ~2 fds per connection)
    maxconn 4096
    log stderr format short local0 warning

defaults
    mode http
    log global
    option dontlognull
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout http-keep-alive 60s

frontend apiserver
    bind 127.0.0.1:${HAPROXY_PORT} ssl crt ${SERVER_BUNDLE} alpn h2,http/1.1
    default_backend replicas

backend replicas
    balance ${HAPROXY_BALANCE}
    http-reuse always
    option httpchk
    http-check send meth GET uri /readyz
    default-server ssl verify required ca-file ${CA} sni str(localhost) verifyhost localhost alpn h2 check check-alpn http/1.1 inter 1s fall 2 rise 1
CFG
i=0
for a in "${ADDRS[@]}"; do
  echo "    server replica-$i $a" >>"$TMP/haproxy.cfg"
  i=$((i + 1))
done
"$HAPROXY" -c -q -f "$TMP/haproxy.cfg" || die "invalid generated HAProxy config ($TMP/haproxy.cfg)"
"${PIN_TARGET[@]}" "$HAPROXY" -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
PIDS+=($!)
wait_for_port "$HAPROXY_PORT" "$!" || { cat "$TMP/haproxy.log" >&2; exit 1; }
HAPROXY_URL="https://127.0.0.1:$HAPROXY_PORT"
log "haproxy: $HAPROXY_URL"
cp "$TMP/haproxy.cfg" "$OUT_DIR/haproxy.cfg"

# --- the comparison ----------------------------------------------------------------------------
TARGETS=(--target "direct=https://${ADDRS[0]}" --target "l4-baseline=$L4_URL")
[[ -n "$APIGATE_URL" ]] && TARGETS+=(--target "apigate=$APIGATE_URL")
TARGETS+=(--target "haproxy=$HAPROXY_URL")

rc=0
for run in $(seq 1 "$RUNS"); do
  log "run $run of $RUNS: compare (${#TARGETS[@]} flags); results in $OUT_DIR"
  set +e
  "${PIN_LOADGEN[@]}" "$LOADTEST" compare "${TARGETS[@]}" \
    --ca "$CA" --replicas "$REPLICA_IDS" \
    --clients "$CLIENTS" --rate "$RATE" --client-skew "$SKEW" \
    --duration "$DURATION" --warmup "$WARMUP" --watches-per-client "$WATCHES" --mix "$MIX" \
    --pause 2s --report "$OUT_DIR/compare-$run.html" --json >"$OUT_DIR/compare-$run.json" \
    2>"$OUT_DIR/compare-$run.txt"
  status=$?
  set -e
  [ "$status" -eq 0 ] || rc=$status
  echo "run $run:"
  grep -v '^\[' "$OUT_DIR/compare-$run.txt" | sed -n '/^scenario:/,$p'
  cp "$OUT_DIR/compare-$run.html" "$OUT_DIR/compare.html"
done
echo
echo "Range over $RUNS runs (min-max):"
python3 - "$OUT_DIR" "$RUNS" <<'PY'
import json, sys
out, runs = sys.argv[1], int(sys.argv[2])
figures = {}
for i in range(1, runs + 1):
    for run in json.load(open(f"{out}/compare-{i}.json"))["runs"]:
        f = figures.setdefault(run["target"], {k: [] for k in ("rps", "p50", "p99", "max/mean", "cv")})
        f["rps"].append(run["requests"]["throughput_rps"])
        f["p50"].append(run["latency_ms"]["p50"])
        f["p99"].append(run["latency_ms"]["p99"])
        f["max/mean"].append(run["distribution"]["max_over_mean"])
        f["cv"].append(run["distribution"]["cv"])
print("| target | req/s | p50 ms | p99 ms | max/mean | CV |")
print("|---|---:|---:|---:|---:|---:|")
for target, f in figures.items():
    def span(key, fmt):
        lo, hi = min(f[key]), max(f[key])
        return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{lo:{fmt}}–{hi:{fmt}}"
    print(f"| {target} | {span('rps', '.0f')} | {span('p50', '.2f')} | {span('p99', '.2f')} | {span('max/mean', '.2f')} | {span('cv', '.3f')} |")
PY
log "per run: $OUT_DIR/compare-N.txt, .json, .html (plots; compare.html is the last run's)"
exit "$rc"
