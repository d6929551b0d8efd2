#!/usr/bin/env bash
# What active health checks of N backends cost: CPU, memory, connections, apigate next
# to HAProxy checking the same replicas the same way.
#
# N fake replicas (`apigate-loadtest backend`, TLS, one process) behind one route, no
# client traffic. In turn, each pinned to CPU $PROXY_CPU:
#   off      - apigate with health checks off (the baseline);
#   apigate  - apigate with health checks at their defaults: every 2 s ±10%, HTTPS
#              GET /readyz over a kept-alive connection per replica;
#   haproxy  - HAProxy 2.6, one thread, `option httpchk GET /readyz` every 2 s over
#              TLS with the same CA and SNI (it opens a connection per check and
#              resumes the TLS session).
# For each: user and system CPU time over DURATION (/proc/PID/stat), resident memory
# (VmRSS) and open sockets (/proc/PID/fd), after a settling time. apigate's cost of
# probing is its difference to the baseline. System time is the kernel's loopback TCP
# work, shared with the replicas' process on the other core.
#
# Usage: bench/probe-cost.sh   (from the repo root; builds release binaries if needed)
# Knobs: N=1000 DURATION=60 SETTLE=10 PROXY_CPU=0 HAPROXY=/usr/sbin/haproxy
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-1000}
DURATION=${DURATION:-60}
SETTLE=${SETTLE:-10}
PROXY_CPU=${PROXY_CPU:-0}
HAPROXY=${HAPROXY:-/usr/sbin/haproxy}
# shellcheck source=bench/lib.sh
source bench/lib.sh
OTHER_CPUS=$(other_cpus "$PROXY_CPU")

bench_init probes

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
taskset -c "$OTHER_CPUS" "$LOADTEST" backend -n "$N" --service-time 0ms --out-dir "$TMP/backend" >"$TMP/backend.log" 2>&1 &
PIDS+=($!)
wait_backends "$TMP/backend"

# shellcheck source=bench/apigate-config.sh
source bench/apigate-config.sh
TICK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
sockets() { find "/proc/$1/fd" -lname 'socket:*' 2>/dev/null | wc -l; }

sample() { # name pid port -> "name user_ms sys_ms rss_kib sockets"
  local name=$1 pid=$2 user0 sys0 user1 sys1
  wait_port "$3"
  sleep "$SETTLE"
  read -r user0 sys0 < <(cpu_ticks "$pid")
  sleep "$DURATION"
  read -r user1 sys1 < <(cpu_ticks "$pid")
  echo "$name $(( (user1 - user0) * 1000 / TICK )) $(( (sys1 - sys0) * 1000 / TICK )) $(rss_kib "$pid") $(sockets "$pid")"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

apigate() { # name health-setting
  local port pid
  port=$(free_port)
  APIGATE_BENCH_DEFAULTS="health: {$2}" apigate_bench_config "127.0.0.1:$port" \
    "$TMP/backend/server.pem" "$TMP/backend/server-key.pem" "$TMP/backend/ca.pem" \
    "${BACKENDS[@]}" >"$TMP/$1.yaml"
  taskset -c "$PROXY_CPU" "$APIGATE" --log warn run --config "$TMP/$1.yaml" >"$TMP/$1.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  sample "$1" "$pid" "$port"
}

haproxy() {
  local port pid i=0
  port=$(free_port)
  {
    cat <<CFG
global
  maxconn 4096
  nbthread 1
  ssl-server-verify required
defaults
  mode http
  timeout connect 1s
  timeout check 1s
  timeout client 60s
  timeout server 60s
frontend fe
  bind 127.0.0.1:$port ssl crt $TMP/backend/server-bundle.pem alpn h2,http/1.1
  default_backend be
backend be
  option httpchk
  http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host localhost
  default-server inter 2s fall 3 rise 1
CFG
    for b in "${BACKENDS[@]}"; do
      echo "  server r$i $b ssl verify required ca-file $TMP/backend/ca.pem sni str(localhost) check check-sni localhost"
      i=$((i + 1))
    done
  } >"$TMP/haproxy.cfg"
  taskset -c "$PROXY_CPU" "$HAPROXY" -f "$TMP/haproxy.cfg" -db >"$TMP/haproxy.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  sample haproxy "$pid" "$port"
  # Failing checks would measure something else: say so.
  if grep -q "is DOWN" "$TMP/haproxy.log"; then
    echo "HAProxy marked replicas down: $(grep -c 'is DOWN' "$TMP/haproxy.log") times" >&2
  fi
}

OFF=$(apigate off "enabled: false")
ON=$(apigate apigate "enabled: true")
ROWS=("$OFF" "$ON")
if [ -x "$HAPROXY" ]; then
  ROWS+=("$(haproxy)")
else
  echo "no HAProxy at $HAPROXY: measuring apigate only" >&2
fi
python3 - "$N" "$DURATION" "${ROWS[@]}" <<'PY'
import sys
n, duration = int(sys.argv[1]), float(sys.argv[2])
rows = {r.split()[0]: [float(x) for x in r.split()[1:]] for r in sys.argv[3:]}
probes = n / 2.0 * duration  # interval 2 s
pct = lambda ms: ms / duration / 10
print(f"{n} backends, one route, no client traffic; CPU over {duration:.0f} s after settling, "
      "each pinned to one core; % of a core")
print()
print("| checks | user CPU % | system CPU % | µs CPU per check (user + system) | resident MiB | open sockets |")
print("|---|---:|---:|---:|---:|---:|")
base = rows["off"]
for name, label in (("off", "apigate, checks off"), ("apigate", "apigate"), ("haproxy", "HAProxy 2.6")):
    if name not in rows:
        continue
    user, system, rss, socks = rows[name]
    if name == "off":
        per = "–"
    else:
        b = base if name == "apigate" else [0, 0]
        per = f"{(user - b[0]) * 1000 / probes:.0f} + {(system - b[1]) * 1000 / probes:.0f}"
    print(f"| {label} | {pct(user):.2f} | {pct(system):.2f} | {per} | {rss / 1024:.1f} | {socks:.0f} |")
on = rows["apigate"]
print()
print(f"apigate probing {n} backends ({probes / duration:.0f} checks/s): "
      f"{pct(on[0] - base[0] + on[1] - base[1]):.2f}% of a core, "
      f"+{(on[2] - base[2]) / 1024:.1f} MiB, {on[3] - base[3]:.0f} connections")
PY
