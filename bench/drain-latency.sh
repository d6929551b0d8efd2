#!/usr/bin/env bash
# How fast a replica whose /readyz fails stops getting new requests through apigate.
#
# Three fake replicas (`apigate-loadtest backend`), apigate in front with active health
# checks every INTERVAL, and steady load (`apigate-loadtest run`, open loop, RATE/s)
# throughout. Each trial puts one replica (in turn) into a condition through the
# backend's admin endpoint, waits, and reads the replica's own time of the last request
# it received: the time from /readyz failing to the last new request is that minus the
# time of the flip. Then the replica is made ready again and allowed back. Two
# conditions, TRIALS each:
#   shutting-down  /readyz fails with kube-apiserver's `shutdown` check (its
#                  --shutdown-delay-duration): one failed probe drains it;
#   not-ready      /readyz fails with the `etcd` check: unhealthyThreshold (3) failed
#                  probes in a row make it unready.
# Prints p50 / p99 / max per condition, in ms and in probe intervals.
#
# Usage: bench/drain-latency.sh   (from the repo root; builds release binaries if needed)
# Knobs: TRIALS=50 INTERVAL_MS=1000 RATE=600 CONDITIONS="shutting-down not-ready"
# Every process it starts is killed by pid on exit; ports are picked free; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

TRIALS=${TRIALS:-50}
INTERVAL_MS=${INTERVAL_MS:-1000}
RATE=${RATE:-600}
CONDITIONS=${CONDITIONS:-shutting-down not-ready}
# shellcheck source=bench/lib.sh
source bench/lib.sh

bench_init drain

ADMIN_PORT=$(free_port)
"$LOADTEST" backend -n 3 --service-time 1ms --out-dir "$TMP/backend" --admin "127.0.0.1:$ADMIN_PORT" >"$TMP/backend.log" 2>&1 &
PIDS+=($!)
wait_backends "$TMP/backend"

AG_PORT=$(free_port)
# shellcheck source=bench/apigate-config.sh
source bench/apigate-config.sh
# No ramp: a replica that comes back takes its full share at once (slow start is
# measured by bench/slow-start.sh).
APIGATE_BENCH_DEFAULTS="health: {interval: ${INTERVAL_MS}ms, timeout: $((INTERVAL_MS / 2))ms}, slowStart: {window: 0s}" \
  apigate_bench_config "127.0.0.1:$AG_PORT" "$TMP/backend/server.pem" "$TMP/backend/server-key.pem" \
  "$TMP/backend/ca.pem" "${BACKENDS[@]}" >"$TMP/apigate.yaml"
"$APIGATE" --log warn run --config "$TMP/apigate.yaml" >"$TMP/apigate.log" 2>&1 &
PIDS+=($!)
wait_port "$AG_PORT"

# Load for longer than the trials can take; stopped by the cleanup.
"$LOADTEST" run --target "https://127.0.0.1:$AG_PORT" --ca "$TMP/backend/ca.pem" --sni localhost \
  --clients 6 --rate "$RATE" --warmup 1s --duration 3600s --quiet --accept-status 404,409 \
  >"$TMP/load.log" 2>&1 &
PIDS+=($!)
sleep 3

python3 - "$ADMIN_PORT" "$TRIALS" "$INTERVAL_MS" "$CONDITIONS" <<'PY'
import json, statistics, sys, time, urllib.request

admin, trials, interval, conditions = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) / 1000, sys.argv[4].split()
base = f"http://127.0.0.1:{admin}"

def replicas():
    with urllib.request.urlopen(base + "/replicas") as r:
        return {x["id"]: x for x in json.load(r)}

def condition(rid, value):
    req = urllib.request.Request(f"{base}/replicas/{rid}/condition?value={value}", method="POST")
    urllib.request.urlopen(req).read()

# Failed probes needed: one for a shutdown, the threshold (3) otherwise; jitter +10%.
needed = {"shutting-down": 1, "not-ready": 3}
print(f"{trials} trials per condition, probe interval {interval * 1000:.0f} ms, ±10% jitter")
print()
print("| condition | failed probes needed | p50 ms | p99 ms | max ms | p50 / interval | p99 / interval | not drained |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
ids = sorted(replicas())
for cond in conditions:
    results, stuck = [], 0
    for i in range(trials):
        rid = ids[i % len(ids)]
        flipped = time.time_ns()
        condition(rid, cond)
        time.sleep(interval * (needed[cond] * 1.1 + 1) + 0.3)
        first = replicas()[rid]
        time.sleep(0.3)
        second = replicas()[rid]
        if second["requests_total"] != first["requests_total"]:
            stuck += 1
        else:
            results.append((first["last_request_unix_ns"] - flipped) / 1e6)
        condition(rid, "ready")
        # Back in: two passed probes (healthyThreshold), then a moment of traffic.
        time.sleep(interval * 2.2 + 0.5)
    results.sort()
    pct = lambda p: results[min(len(results) - 1, int(p / 100 * len(results)))] if results else float("nan")
    print(f"| {cond} | {needed[cond]} | {pct(50):.0f} | {pct(99):.0f} | {results[-1] if results else float('nan'):.0f} | "
          f"{pct(50) / 1000 / interval:.2f} | {pct(99) / 1000 / interval:.2f} | {stuck} |")
PY
