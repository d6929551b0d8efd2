#!/usr/bin/env bash
# Faults under load: what clients see while replicas die, apigate restarts and its
# configuration changes. One command; every scenario runs a client-go-like load through
# apigate (`apigate-loadtest run --retries`: 6 clients in a closed loop, 2 requests
# outstanding each, a watch each, get/list/create/patch) and causes its faults with
# `--action` at fixed times. Failed requests are split into what a client-go client
# handles by itself (retried: a refused stream, a GET cut by a reset, a 429/5xx with
# Retry-After) and what its callers would see (failed).
#
# Scenarios (SCENARIOS, default all):
#   backend-sigterm   a replica shuts down as kube-apiserver does (/readyz fails with
#                     its shutdown check for 2 s, then SIGTERM); a replacement joins at
#                     a new address (configuration rewritten)
#   backend-sigkill   a replica is killed (SIGKILL) with requests in flight; a
#                     replacement joins
#   reloads           50 configurations in 10 s (a route added, then removed), and
#                     another route switched terminate -> passthrough -> terminate
#   apigate-restart   two apigate replicas behind HAProxy in TCP mode, which checks
#                     apigate's /readyz; each in turn gets SIGTERM (--shutdown-delay 2s,
#                     --grace 5s) and is replaced on the same ports
#
# Usage: bench/faults.sh   (from the repo root; builds release binaries if needed)
# Knobs: SCENARIOS="..." DURATION=30s OUT=dir (reports: OUT/NAME.html, OUT/NAME.json)
# Every process it starts is killed by pid on exit; ports are picked free; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIOS=${SCENARIOS:-backend-sigterm backend-sigkill reloads apigate-restart}
DURATION=${DURATION:-30s}
# shellcheck source=bench/lib.sh
source bench/lib.sh
# shellcheck source=bench/apigate-config.sh
source bench/apigate-config.sh

# One backend process per replica, so each can be signalled alone; each has its own
# CA, so apigate verifies the replicas against a bundle of them.
start_replica() { # NAME -> $TMP/NAME/{backends.env,...}, pid in $TMP/NAME.pid
  local name=$1
  "$LOADTEST" backend -n 1 --service-time 1ms --out-dir "$TMP/$name" \
    --admin "127.0.0.1:$(free_port)" >"$TMP/$name.log" 2>&1 &
  PIDS+=($!)
  echo $! >"$TMP/$name.pid"
  for _ in $(seq 1 300); do [ -s "$TMP/$name/backends.env" ] && return 0; sleep 0.1; done
  echo "replica $name never started" >&2
  exit 1
}

addr_of() { (source "$TMP/$1/backends.env" && echo "$REPLICA_ADDRS"); }
admin_of() { (source "$TMP/$1/backends.env" && echo "$ADMIN"); }

# The configuration: bench/apigate-config.sh's (route "bench", SNI localhost) on the
# live replicas, with an admin listener and probes every 500 ms; then route "other"
# (SNI other.localhost) in MODE on the same replicas, and EXTRA more routes.
write_config() { # FILE LISTEN ADMIN MODE EXTRA REPLICA... (written whole, then moved)
  local file=$1 listen=$2 admin=$3 mode=$4 extra=$5
  shift 5
  local addrs=() name
  for name in "$@"; do addrs+=("$(addr_of "$name")"); done
  cat "$TMP"/r*/ca.pem >"$TMP/upstream-ca.pem"
  {
    APIGATE_BENCH_ADMIN=$admin APIGATE_BENCH_DEFAULTS="health: {interval: 500ms, timeout: 250ms}" \
      apigate_bench_config "$listen" "$TMP/r0/server.pem" "$TMP/r0/server-key.pem" \
      "$TMP/upstream-ca.pem" "${addrs[@]}"
    extra_route other other.localhost "$mode" "${addrs[@]}"
    for i in $(seq 1 "$extra"); do
      extra_route "extra-$i" "extra-$i.localhost" terminate "${addrs[@]}"
    done
  } >"$file.new"
  mv "$file.new" "$file"
}

# One more route on the replicas, terminating with the bench's material or passing
# through.
extra_route() { # NAME HOSTNAME MODE BACKEND...
  local name=$1 host=$2 mode=$3 backends how
  shift 3
  backends=$(printf '"%s", ' "$@")
  if [ "$mode" = passthrough ]; then
    how="mode: passthrough"
  else
    how="tls: {certFile: $TMP/r0/server.pem, keyFile: $TMP/r0/server-key.pem}
  upstream: {caFile: $TMP/upstream-ca.pem, serverName: localhost}"
  fi
  cat <<YAML
---
apiVersion: apigate.dev/v1alpha1
kind: ApiServerRoute
metadata: {name: $name, namespace: $name}
spec:
  hostnames: [$host]
  backends: {static: [${backends%, }]}
  $how
YAML
}

start_apigate() { # NAME PORT ADMIN_PORT (configuration: $TMP/NAME.yaml)
  "$APIGATE" --log warn run --config "$TMP/$1.yaml" --watch-interval 100ms \
    --shutdown-delay 2s --grace 5s >>"$TMP/$1.log" 2>&1 &
  PIDS+=($!)
  echo $! >"$TMP/$1.pid"
  wait_port "$2"
  wait_port "$3"
}

# The actions' commands call back into this script (bash bench/faults.sh act ...) with
# the state it keeps in $TMP.
revision() { curl -s "http://$1/metrics" | awk '/^apigate_config_revision /{print $2}'; }

run_load() { # NAME TARGET_PORT ACTION...
  local name=$1 port=$2
  shift 2
  local actions=()
  for a in "$@"; do actions+=(--action "$a"); done
  "$LOADTEST" run --target "https://127.0.0.1:$port" --ca "$TMP/r0/ca.pem" --sni localhost \
    --clients 6 --mode closed --concurrency 2 --retries --watches-per-client 1 \
    --mix get=60,list=20,create=10,patch=10 --accept-status 404,409 \
    --warmup 1s --duration "$DURATION" --timeout 10s --grace 5s --quiet \
    --json --report "$OUT/$name.html" "${actions[@]}" >"$OUT/$name.json" 2>"$OUT/$name.txt" || true
  python3 - "$name" "$OUT/$name.json" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
q = r["requests"]
retried = ", ".join(f"{k} {v}" for k, v in sorted(r.get("retried", {}).items())) or "0"
w = r["watches"]
failed_actions = [a["label"] for a in r.get("actions", []) if not a["ok"]]
print(f"| {name} | {q['ok']} | {q['errors']} ({', '.join(f'{k} {v}' for k, v in r['errors'].items()) or '-'}) "
      f"| {retried} | {w['opened']} opened, {w['ended_early']} ended early, {sum(w['errors'].values())} failed |"
      + (f" actions failed: {failed_actions}" if failed_actions else ""))
PY
}

if [ "${1:-}" = act ]; then
  # Actions, run by apigate-loadtest: act WHAT ARGS...
  shift
  PIDS=()
  trap - EXIT
  # shellcheck disable=SC1091
  source "$TMP/state.env"
  case "$1" in
    sigterm-replica) # NAME: shutting down as kube-apiserver does, then SIGTERM
      curl -sf -X POST "http://$(admin_of "$2")/replicas/replica-0/condition?value=shutting-down" >/dev/null
      sleep 2
      kill -TERM "$(cat "$TMP/$2.pid")" ;;
    sigkill-replica)
      kill -KILL "$(cat "$TMP/$2.pid")" ;;
    replace-replica) # OLD NEW: NEW joins, OLD leaves the configuration
      start_replica "$3"
      live=()
      for r in $LIVE; do [ "$r" != "$2" ] && live+=("$r"); done
      live+=("$3")
      before=$(revision "127.0.0.1:$ADMIN1")
      write_config "$TMP/apigate1.yaml" "127.0.0.1:$PORT1" "127.0.0.1:$ADMIN1" terminate 0 "${live[@]}"
      for _ in $(seq 1 100); do [ "$(revision "127.0.0.1:$ADMIN1")" != "$before" ] && exit 0; sleep 0.1; done
      echo "the configuration with the replacement was not applied" >&2; exit 1 ;;
    reloads) # 50 configurations in 10 s; the other route to passthrough and back
      for i in $(seq 1 50); do
        mode=terminate
        if [ "$i" -gt 15 ] && [ "$i" -le 35 ]; then mode=passthrough; fi
        write_config "$TMP/apigate1.yaml" "127.0.0.1:$PORT1" "127.0.0.1:$ADMIN1" "$mode" $((i % 2)) $LIVE
        sleep 0.2
      done ;;
    restart-apigate) # N: SIGTERM apigate N, wait for it to end, start its replacement
      pid=$(cat "$TMP/apigate$2.pid")
      kill -TERM "$pid"
      for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      port_var=PORT$2 admin_var=ADMIN$2
      start_apigate "apigate$2" "${!port_var}" "${!admin_var}" ;;
    *) echo "unknown action $1" >&2; exit 2 ;;
  esac
  exit 0
fi

bench_init faults
SELF="bash $PWD/bench/faults.sh act"
export TMP
OUT=${OUT:-$TMP/out}
mkdir -p "$OUT"
# Processes the actions started (replacements) are recorded in $TMP/*.pid only.
kill_recorded() {
  local f
  for f in "$TMP"/*.pid; do [ -e "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null || true; done
}
trap '{ kill_recorded; bench_cleanup; } 2>/dev/null' EXIT

echo "| scenario | requests ok | failed (user-visible) | retried (client handles) | watches |"
echo "|---|---:|---|---|---|"
for scenario in $SCENARIOS; do
  # A fresh world per scenario: three replicas and one apigate (two behind HAProxy for
  # the restart), all stopped at the end of the scenario.
  {
    kill_recorded
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" || true; done
  } 2>/dev/null
  PIDS=()
  rm -rf "$TMP"/r* "$TMP"/*.yaml "$TMP"/*.pid
  for r in r0 r1 r2; do start_replica "$r"; done
  LIVE="r0 r1 r2"
  PORT1=$(free_port) ADMIN1=$(free_port)
  write_config "$TMP/apigate1.yaml" "127.0.0.1:$PORT1" "127.0.0.1:$ADMIN1" terminate 0 $LIVE
  start_apigate apigate1 "$PORT1" "$ADMIN1"
  printf 'LIVE="%s"\nPORT1=%s\nADMIN1=%s\n' "$LIVE" "$PORT1" "$ADMIN1" >"$TMP/state.env"
  case "$scenario" in
    backend-sigterm)
      run_load "$scenario" "$PORT1" "5s=SIGTERM r1=$SELF sigterm-replica r1" \
        "15s=replacement=$SELF replace-replica r1 r3" ;;
    backend-sigkill)
      run_load "$scenario" "$PORT1" "5s=SIGKILL r1=$SELF sigkill-replica r1" \
        "15s=replacement=$SELF replace-replica r1 r3" ;;
    reloads)
      run_load "$scenario" "$PORT1" "5s=50 reloads=$SELF reloads" ;;
    apigate-restart)
      PORT2=$(free_port) ADMIN2=$(free_port) LB=$(free_port)
      write_config "$TMP/apigate2.yaml" "127.0.0.1:$PORT2" "127.0.0.1:$ADMIN2" terminate 0 $LIVE
      start_apigate apigate2 "$PORT2" "$ADMIN2"
      printf 'PORT2=%s\nADMIN2=%s\n' "$PORT2" "$ADMIN2" >>"$TMP/state.env"
      cat >"$TMP/haproxy.cfg" <<CFG
global
  maxconn 2000
defaults
  mode tcp
  timeout connect 2s
  timeout client 1h
  timeout server 1h
frontend apigate
  bind 127.0.0.1:$LB
  default_backend apigate
backend apigate
  balance roundrobin
  option httpchk GET /readyz
  server apigate1 127.0.0.1:$PORT1 check port $ADMIN1 inter 300ms fall 1 rise 2
  server apigate2 127.0.0.1:$PORT2 check port $ADMIN2 inter 300ms fall 1 rise 2
CFG
      haproxy -f "$TMP/haproxy.cfg" -db >"$TMP/haproxy.log" 2>&1 &
      PIDS+=($!)
      wait_port "$LB"
      sleep 1
      run_load "$scenario" "$LB" "5s=restart apigate 1=$SELF restart-apigate 1" \
        "17s=restart apigate 2=$SELF restart-apigate 2" ;;
    *) echo "unknown scenario $scenario" >&2; exit 2 ;;
  esac
done
echo
echo "reports: $OUT/*.html (plots), $OUT/*.json, $OUT/*.txt"
