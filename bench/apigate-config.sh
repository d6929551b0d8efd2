# Shared by the bench scripts (sourced, not run): the apigate configuration they measure.
#
#   apigate_bench_config LISTEN CERT KEY CA BACKEND...   > apigate.yaml
#
# One route named by SNI "localhost", serving CERT/KEY, replicas verified with CA,
# HTTP/2 upstream, per-request least-request balancing (apigate's default).
# APIGATE_BENCH_DEFAULTS adds to spec.defaults (YAML flow-map entries, e.g.
# "health: {interval: 1s}, slowStart: {window: 0s}"); APIGATE_BENCH_ADMIN sets the
# admin address (default: none); APIGATE_BENCH_GATEWAY adds one line to the gateway's
# spec (e.g. "accessLog: {enabled: true, path: /tmp/access.log}").
apigate_bench_config() {
  local listen=$1 cert=$2 key=$3 ca=$4
  shift 4
  local backends defaults="" admin="" gateway=""
  backends=$(printf '"%s", ' "$@")
  [ -n "${APIGATE_BENCH_DEFAULTS:-}" ] && defaults=", ${APIGATE_BENCH_DEFAULTS}"
  [ -n "${APIGATE_BENCH_ADMIN:-}" ] && admin="  admin: {address: \"${APIGATE_BENCH_ADMIN}\"}"
  [ -n "${APIGATE_BENCH_GATEWAY:-}" ] && gateway="  ${APIGATE_BENCH_GATEWAY}"
  cat <<YAML
apiVersion: apigate.dev/v1alpha1
kind: GatewayConfig
metadata: {name: bench}
spec:
  listeners: [{name: https, address: "${listen}"}]
  defaults: {balancing: leastRequest${defaults}}
${admin}
${gateway}
---
apiVersion: apigate.dev/v1alpha1
kind: ApiServerRoute
metadata: {name: bench, namespace: bench}
spec:
  hostnames: [localhost]
  backends: {static: [${backends%, }]}
  tls: {certFile: ${cert}, keyFile: ${key}}
  upstream: {caFile: ${ca}, serverName: localhost}
YAML
}

# apigate_bench_start NAME   (needs $TMP, $APIGATE, $PROXY_CPU, $BACKENDS, the fake
# backends' certificates in $TMP/backend, and the arrays PIDS, PID, PORT)
# Writes $TMP/NAME.yaml with apigate_bench_config on a free port (APIGATE_BENCH_* as
# set by the caller) and starts apigate with it pinned to $PROXY_CPU; records its pid in
# PIDS and PID[NAME] and its port in PORT[NAME].
apigate_bench_start() {
  local name=$1 port
  port=$(free_port)
  apigate_bench_config "127.0.0.1:$port" "$TMP/backend/server.pem" "$TMP/backend/server-key.pem" \
    "$TMP/backend/ca.pem" "${BACKENDS[@]}" >"$TMP/$name.yaml"
  taskset -c "$PROXY_CPU" "$APIGATE" --log warn run --config "$TMP/$name.yaml" >"$TMP/$name.log" 2>&1 &
  PIDS+=($!)
  PID[$name]=$!
  PORT[$name]=$port
}
