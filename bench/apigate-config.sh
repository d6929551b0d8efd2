# Shared by the bench scripts (sourced, not run): the apigate configuration they measure.
#
#   apigate_bench_config LISTEN CERT KEY CA BACKEND...   > apigate.yaml
#
# One route named by SNI "localhost", serving CERT/KEY, replicas verified with CA,
# HTTP/2 upstream, per-request least-request balancing (apigate's default).
apigate_bench_config() {
  local listen=$1 cert=$2 key=$3 ca=$4
  shift 4
  local backends
  backends=$(printf '"%s", ' "$@")
  cat <<YAML
apiVersion: apigate.dev/v1alpha1
kind: GatewayConfig
metadata: {name: bench}
spec:
  listeners: [{name: https, address: "${listen}"}]
  defaults: {balancing: leastRequest}
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
