#!/usr/bin/env bash
# The slow-start ramp, measured: shares of the replicas over time when a fourth joins
# three that already serve.
#
# Four fake replicas (`apigate-loadtest backend`); apigate starts with three of them and
# slow start at its defaults (30 s window from 10%). `apigate-loadtest run` keeps an
# open-loop load; JOIN_AT seconds into the measured phase the fourth replica is added to
# the configuration (apigate reloads the file). The report's last plot shows each
# replica's share of responses over time; the table prints the newcomer's share per
# 5 s window next to the share its ramp should give it.
#
# Usage: bench/slow-start.sh   (from the repo root; builds release binaries if needed)
# Knobs: RATE=400 DURATION=50 JOIN_AT=8 OUT_DIR=target/bench
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${RATE:-400}
DURATION=${DURATION:-50}
JOIN_AT=${JOIN_AT:-8}
OUT_DIR=${OUT_DIR:-target/bench}
# shellcheck source=bench/lib.sh
source bench/lib.sh

bench_init ramp
mkdir -p "$OUT_DIR"

"$LOADTEST" backend -n 4 --service-time exp:2ms --out-dir "$TMP/backend" >"$TMP/backend.log" 2>&1 &
PIDS+=($!)
wait_backends "$TMP/backend"

AG_PORT=$(free_port)
# shellcheck source=bench/apigate-config.sh
source bench/apigate-config.sh
config() {
  apigate_bench_config "127.0.0.1:$AG_PORT" "$TMP/backend/server.pem" "$TMP/backend/server-key.pem" \
    "$TMP/backend/ca.pem" "$@" >"$TMP/apigate.yaml.new"
  mv "$TMP/apigate.yaml.new" "$TMP/apigate.yaml"
}
config "${BACKENDS[@]:0:3}"
"$APIGATE" --log info run --config "$TMP/apigate.yaml" >"$TMP/apigate.log" 2>&1 &
PIDS+=($!)
wait_port "$AG_PORT"

WARMUP=2
"$LOADTEST" run --target "https://127.0.0.1:$AG_PORT" --ca "$TMP/backend/ca.pem" --sni localhost \
  --clients 8 --rate "$RATE" --warmup "${WARMUP}s" --duration "${DURATION}s" --replicas 4 --quiet \
  --json --report "$OUT_DIR/slow-start.html" >"$OUT_DIR/slow-start.json" 2>"$TMP/load.log" &
LOAD=$!
PIDS+=("$LOAD")
sleep $((WARMUP + JOIN_AT))
config "${BACKENDS[@]}"
wait "$LOAD"

python3 - "$OUT_DIR/slow-start.json" "$JOIN_AT" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
join = float(sys.argv[2])
newcomer = "replica-3"
windows = {}
for point in report["timeline"]:
    w = int(point["t"] // 5) * 5
    windows.setdefault(w, []).append(point.get("replica_share", {}).get(newcomer, 0.0))
print(f"newcomer {newcomer} added {join:.0f} s into the run; slow start 30 s from 10%")
print()
print("| seconds | newcomer's share | expected (ramp) |")
print("|---|---:|---:|")
for w, shares in sorted(windows.items()):
    mid = w + 2.5 - join
    if mid < 0:
        expected = 0.0
    else:
        weight = min(1.0, 0.1 + 0.9 * mid / 30)
        expected = weight / (3 + weight)
    print(f"| {w}–{w + 5} | {sum(shares) / len(shares) * 100:.1f}% | {expected * 100:.1f}% |")
print()
print(f"errors: {report['requests']['errors']} of {report['requests']['ok'] + report['requests']['errors']}")
PY
echo "plot: $OUT_DIR/slow-start.html"
