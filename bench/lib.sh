# Shared by the bench scripts (sourced, not run, from the repo root).
#
#   bench_init NAME     a temp dir $TMP (apigate-NAME.*) and a list $PIDS of processes,
#                       all killed by pid and the dir removed on exit; release binaries
#                       ($APIGATE, $LOADTEST) built first if missing
#   other_cpus CPU      the CPUs this shell may run on except CPU, comma-separated (CPU
#                       itself when it is the only one): where load and replicas go
#   free_port           a free loopback TCP port
#   wait_port PORT      until 127.0.0.1:PORT accepts (10 s), else the logs and exit
#   wait_backends DIR   until `apigate-loadtest backend --out-dir DIR` wrote its
#                       backends.env (30 s); sources it and sets BACKENDS (addresses)
LOADTEST=target/release/apigate-loadtest
APIGATE=target/release/apigate

bench_cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}

bench_init() {
  PIDS=()
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/apigate-$1.XXXXXX")
  trap bench_cleanup EXIT
  if [ ! -x "$APIGATE" ] || [ ! -x "$LOADTEST" ]; then
    bash scripts/bootstrap.sh
    cargo build --release --locked -p apigate -p apigate-loadtest
  fi
}

other_cpus() { python3 -c "import os; print(','.join(str(c) for c in sorted(os.sched_getaffinity(0)) if c != $1) or '$1')"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

wait_port() {
  for _ in $(seq 1 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "port $1 never opened" >&2
  tail -n 20 "$TMP"/*.log >&2
  exit 1
}

wait_backends() {
  for _ in $(seq 1 300); do [ -s "$1/backends.env" ] && break; sleep 0.1; done
  [ -s "$1/backends.env" ] || { echo "the fake backends never started" >&2; tail -n 20 "$TMP"/*.log >&2; exit 1; }
  # shellcheck disable=SC1091
  source "$1/backends.env"
  read -r -a BACKENDS <<<"$REPLICA_ADDRS"
}
