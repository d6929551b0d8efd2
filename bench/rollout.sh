#!/usr/bin/env bash
# Configuration rollouts under load: how long a bad revision takes to freeze, a good one
# to be promoted, and a tightening to apply everywhere, and how many requests fail.
#
# Four fake replicas (`apigate-loadtest backend`); apigate with two routes: `canary`
# (SNI canary.local, replicas 1-2, labelled apigate.dev/canary) and `stable` (SNI
# localhost, replicas 3-4); rollouts on with a BAKE_S-second bake; the file is checked every
# 100 ms. `apigate-loadtest run` drives a client-go-like mix (get, list, create, patch,
# watches) at RATE/s against each route throughout. Each of ROUNDS rounds:
#   good   both routes switch balancing (leastRequest <-> roundRobin): time from the
#          file write to promotion (bake included);
#   bad    both routes get an upstream CA that does not sign the replicas (502s where it
#          runs): time from the file write to the freeze;
#   tight  during the freeze, the stable route's allowlist is narrowed (to 127.0.0.0/8,
#          which still admits the load): time from the file write to it being active;
#   abort  the frozen revision is withdrawn (`POST /rollout/abort`), the file restored.
# Prints medians and the failed requests per route: the stable route's must be 0; the
# canary route's are the bad revision's cost before the freeze.
#
# Usage: bench/rollout.sh   (from the repo root; builds release binaries if needed)
# Knobs: ROUNDS=3 BAKE_S=5 RATE=200
# Every process it starts is killed by pid on exit; ports are picked free; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
BAKE_S=${BAKE_S:-5}
RATE=${RATE:-200}
# shellcheck source=bench/lib.sh
source bench/lib.sh

bench_init rollout

"$LOADTEST" backend -n 4 --service-time 1ms --san canary.local --out-dir "$TMP/backend" >"$TMP/backend.log" 2>&1 &
PIDS+=($!)
wait_backends "$TMP/backend"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=not-the-replicas-ca \
  -keyout "$TMP/wrong-ca-key.pem" -out "$TMP/wrong-ca.pem" -days 1 2>/dev/null

AG_PORT=$(free_port)
ADMIN_PORT=$(free_port)
# The load runs outlast the rounds (each takes about a bake and a few seconds).
DURATION=$((ROUNDS * (BAKE_S + 8) + 20))

render() { # BALANCING CA [STABLE_ALLOW] > config
  python3 - "$TMP" "$AG_PORT" "$ADMIN_PORT" "$BAKE_S" "$1" "$2" "${3:-}" "${BACKENDS[@]}" <<'PY'
import sys
tmp, port, admin, bake, balancing, ca, allow, *b = sys.argv[1:]
acl = f"\n  accessControl: {{rules: [{{action: allow, cidrs: [{allow}]}}]}}" if allow else ""
def route(name, host, backends, labels, extra=""):
    return f"""---
apiVersion: apigate.dev/v1alpha1
kind: ApiServerRoute
metadata: {{name: {name}, namespace: bench-{name}, labels: {{{labels}}}}}
spec:
  hostnames: [{host}]
  balancing: {balancing}
  backends: {{static: [{", ".join(f'"{x}"' for x in backends)}]}}
  tls: {{certFile: {tmp}/backend/server.pem, keyFile: {tmp}/backend/server-key.pem}}
  upstream: {{caFile: {ca}, serverName: localhost}}{extra}
"""
print(f"""apiVersion: apigate.dev/v1alpha1
kind: GatewayConfig
metadata: {{name: bench}}
spec:
  listeners: [{{name: https, address: "127.0.0.1:{port}"}}]
  admin: {{address: "127.0.0.1:{admin}"}}
  rollout: {{enabled: true, bakeTime: {bake}s, gates: {{minRequests: 50}}}}
""" + route("canary", "canary.local", b[0:2], 'apigate.dev/canary: "true"')
    + route("stable", "localhost", b[2:4], "", acl))
PY
}
export -f render
export TMP AG_PORT ADMIN_PORT BAKE_S
export BACKENDS_LIST="${BACKENDS[*]}"

render leastRequest "$TMP/backend/ca.pem" >"$TMP/apigate.yaml"
"$APIGATE" --log info run --config "$TMP/apigate.yaml" --watch-interval 100ms >"$TMP/apigate.log" 2>&1 &
PIDS+=($!)
wait_port "$AG_PORT"

LOAD_PIDS=()
for route in canary stable; do
  sni=localhost
  [ "$route" = canary ] && sni=canary.local
  "$LOADTEST" run --target "https://127.0.0.1:$AG_PORT" --ca "$TMP/backend/ca.pem" --sni "$sni" \
    --clients 4 --rate "$RATE" --warmup 1s --duration "${DURATION}s" --quiet --accept-status 404,409 \
    --json >"$TMP/load-$route.json" 2>"$TMP/load-$route.log" &
  PIDS+=($!)
  LOAD_PIDS+=($!)
done
sleep 3

python3 - "$TMP" "$ADMIN_PORT" "$ROUNDS" "$BAKE_S" <<'PY'
import json, os, statistics, subprocess, sys, time, urllib.request

tmp, admin, rounds, bake = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
base = f"http://127.0.0.1:{admin}"
ca, wrong = f"{tmp}/backend/ca.pem", f"{tmp}/wrong-ca.pem"
backends = os.environ["BACKENDS_LIST"].split()

def status():
    with urllib.request.urlopen(base + "/rollout") as r:
        return json.load(r)

def revision():
    with urllib.request.urlopen(base + "/metrics") as r:
        for line in r.read().decode().splitlines():
            if line.startswith("apigate_config_revision "):
                return float(line.split()[1])

def write(balancing, ca_file, allow=""):
    env = dict(os.environ)
    text = subprocess.run(["bash", "-c", 'BACKENDS=($BACKENDS_LIST); render "$@"', "render",
                           balancing, ca_file, allow], capture_output=True, text=True,
                          check=True, env=env).stdout
    # Atomic replacement: the watcher never reads half a file.
    with open(f"{tmp}/apigate.yaml.new", "w") as f:
        f.write(text)
    os.replace(f"{tmp}/apigate.yaml.new", f"{tmp}/apigate.yaml")

def until(check, limit=120):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.01)
    raise SystemExit(f"timed out; rollout status: {status()}")

good, bad, tight = [], [], []
balancing = "leastRequest"
for _ in range(rounds):
    balancing = "roundRobin" if balancing == "leastRequest" else "leastRequest"
    stable = status()["stableRevision"]
    t = time.monotonic(); write(balancing, ca)
    until(lambda: (lambda s: s["phase"] == "idle" and s["stableRevision"] > stable)(status()))
    good.append(time.monotonic() - t)

    t = time.monotonic(); write(balancing, wrong)
    until(lambda: status()["phase"] == "frozen")
    bad.append(time.monotonic() - t)

    r = revision()
    t = time.monotonic(); write(balancing, wrong, "127.0.0.0/8")
    until(lambda: revision() > r)
    tight.append(time.monotonic() - t)
    assert status()["phase"] == "frozen", status()

    urllib.request.urlopen(urllib.request.Request(base + "/rollout/abort", method="POST")).read()
    write(balancing, ca)  # the stable policy again: applies at once
    until(lambda: status()["phase"] == "idle")
    time.sleep(1)

ms = lambda xs: f"{statistics.median(xs) * 1000:.0f}"
print(f"{rounds} rounds, bake {bake} s, file checked every 100 ms")
print()
print("| action | median ms | each round, ms |")
print("|---|---:|---|")
for name, xs in [("good revision → promoted (bake included)", good),
                 ("bad revision → frozen", bad),
                 ("tightening during a freeze → active everywhere", tight)]:
    print(f"| {name} | {ms(xs)} | {', '.join(f'{x * 1000:.0f}' for x in xs)} |")
PY

for pid in "${LOAD_PIDS[@]}"; do wait "$pid" || true; done
python3 - "$TMP" <<'PY'
import json, sys
tmp = sys.argv[1]
print()
print("| route | requests ok | failed | failures by kind |")
print("|---|---:|---:|---|")
for route in ["canary", "stable"]:
    r = json.load(open(f"{tmp}/load-{route}.json"))
    q = r["requests"]
    print(f"| {route} | {q['ok']} | {q['errors']} | {r['errors'] or '-'} |")
PY
