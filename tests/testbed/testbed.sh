#!/usr/bin/env bash
# apigate end-to-end testbed: a real HA Kubernetes control plane on loopback.
#
#   testbed.sh install      install/build kube-apiserver 1.20.2 + kubectl 1.20 + fake-kubelet (cached)
#   testbed.sh up DIR       PKI + 1 etcd + 3 kube-apiserver replicas + fake kubelet on 127.0.0.1
#   testbed.sh down DIR     stop everything started by `up DIR`
#   testbed.sh env DIR      print DIR/testbed.env
#
# See README.md next to this file.
set -euo pipefail

CACHE="${APIGATE_TESTBED_CACHE:-$HOME/.cache/apigate-testbed}"
BIN="$CACHE/bin"
KUBE_APISERVER="$BIN/kube-apiserver"
KUBECTL="$BIN/kubectl"
FAKE_KUBELET="$BIN/fake-kubelet"
FAKE_KUBELET_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/fake-kubelet"
NREPLICAS=3
READY_TIMEOUT="${APIGATE_TESTBED_READY_TIMEOUT:-180}"

log() { echo "[testbed] $*" >&2; }
die() { echo "[testbed] ERROR: $*" >&2; exit 1; }

usage() {
  cat >&2 <<EOF
usage: $0 install
       $0 up DIR
       $0 down DIR
       $0 env DIR
EOF
  exit 2
}

# ---------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------

# The stamp marks a binary built with the reflect2 fix below; older caches are rebuilt.
APISERVER_STAMP="reflect2-1.0.2"
apiserver_ok() {
  [ -x "$KUBE_APISERVER" ] && "$KUBE_APISERVER" --version >/dev/null 2>&1 &&
    [ "$(cat "$KUBE_APISERVER.build" 2>/dev/null)" = "$APISERVER_STAMP" ]
}
kubectl_ok() { [ -x "$KUBECTL" ] && "$KUBECTL" version --client >/dev/null 2>&1; }
# The fake kubelet (fake-kubelet/main.go, built against the same kubernetes source
# tree) is rebuilt whenever its source changes: the stamp carries the source hash.
fake_kubelet_stamp() { echo "k8s-1.20.2+reflect2-1.0.2-$(sha256sum "$FAKE_KUBELET_SRC/main.go" | cut -c1-16)"; }
fake_kubelet_ok() {
  [ -x "$FAKE_KUBELET" ] && [ "$(cat "$FAKE_KUBELET.build" 2>/dev/null)" = "$(fake_kubelet_stamp)" ] &&
    { "$FAKE_KUBELET" -h 2>&1 || true; } | grep -q -- -client-ca-file
}

APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    apt-get update -qq
    APT_UPDATED=1
  fi
}

# Whether an apt candidate exists for a package (i.e. package lists are present).
apt_known() { apt-cache show "$1" >/dev/null 2>&1; }

install_packages() {
  local missing=() p
  for p in etcd-server golang-go golang-github-modern-go-reflect2-dev rsync jq openssl dpkg-dev build-essential curl python3 ca-certificates; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$p")
    fi
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    log "packages already installed"
    return
  fi
  log "installing: ${missing[*]}"
  for p in "${missing[@]}"; do
    apt_known "$p" || { apt_update_once; break; }
  done
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    || { apt_update_once; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; }
}

install_kubectl() {
  if kubectl_ok; then
    log "kubectl cached: $KUBECTL ($("$KUBECTL" version --client --short 2>/dev/null || true))"
    return
  fi
  log "fetching kubectl from Debian package kubernetes-client (not installing it)"
  local d="$CACHE/kubernetes-client"
  rm -rf "$d"
  mkdir -p "$d/deb" "$BIN"
  apt_known kubernetes-client || apt_update_once
  (cd "$d/deb" && apt-get download -qq -o APT::Sandbox::User=root kubernetes-client) \
    || { apt_update_once; (cd "$d/deb" && apt-get download -qq -o APT::Sandbox::User=root kubernetes-client); }
  local deb
  deb="$(ls "$d"/deb/kubernetes-client_*.deb | head -n1)"
  [ -n "$deb" ] || die "apt-get download kubernetes-client produced no .deb"
  dpkg-deb -x "$deb" "$d/root"
  install -m 0755 "$d/root/usr/bin/kubectl" "$KUBECTL"
  kubectl_ok || die "extracted kubectl does not run"
  log "kubectl cached: $KUBECTL ($("$KUBECTL" version --client --short 2>/dev/null || true))"
}

have_deb_src() {
  # apt-cache showsrc succeeds (and prints a record) only if deb-src lists exist.
  apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Package: kubernetes'
}

add_deb_src() {
  local f=/etc/apt/sources.list.d/apigate-deb-src.sources
  if [ -e "$f" ]; then
    log "deb-src entry exists ($f)"
    return
  fi
  # Reuse the Debian URIs/keyring of the existing deb822 sources if present.
  local src=/etc/apt/sources.list.d/debian.sources
  local uri="http://deb.debian.org/debian" seckey="/usr/share/keyrings/debian-archive-keyring.gpg"
  local secuuri="http://deb.debian.org/debian-security"
  if [ -r "$src" ]; then
    local u
    while read -r u; do
      case "$u" in
        */debian-security*) secuuri="$u" ;;
        */debian*) uri="$u" ;;
      esac
    done < <(awk '/^URIs:/{for(i=2;i<=NF;i++) print $i}' "$src")
    local k
    k="$(awk '/^Signed-By:/{print $2; exit}' "$src")"
    [ -n "$k" ] && seckey="$k"
  fi
  log "adding deb-src entry $f ($uri bookworm, $secuuri bookworm-security)"
  cat >"$f" <<EOF
# Added by apigate tests/testbed/testbed.sh to build kube-apiserver from source.
Types: deb-src
URIs: $uri
Suites: bookworm bookworm-updates
Components: main
Signed-By: $seckey

Types: deb-src
URIs: $secuuri
Suites: bookworm-security
Components: main
Signed-By: $seckey
EOF
}

# Build kube-apiserver and/or the fake kubelet, whichever is missing, from one
# `apt-get source kubernetes` tree.
build_from_source() {
  if apiserver_ok && fake_kubelet_ok; then
    log "kube-apiserver cached: $KUBE_APISERVER ($("$KUBE_APISERVER" --version 2>&1))"
    log "fake-kubelet cached: $FAKE_KUBELET ($(cat "$FAKE_KUBELET.build"))"
    return
  fi
  if ! have_deb_src; then
    if grep -rqsE '^[[:space:]]*(deb-src[[:space:]]|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      log "deb-src configured but not usable yet"
    else
      add_deb_src
    fi
    APT_UPDATED=0
    apt_update_once
    have_deb_src || die "deb-src for kubernetes unavailable (check deb-src entries for bookworm main)"
  fi
  local b="$CACHE/build"
  rm -rf "$b"
  mkdir -p "$b" "$BIN"
  log "apt-get source kubernetes (into $b)"
  (cd "$b" && apt-get source -qq -o APT::Sandbox::User=root kubernetes >"$b/apt-get-source.log" 2>&1) \
    || { tail -n 30 "$b/apt-get-source.log" >&2; die "apt-get source kubernetes failed"; }
  local tree
  tree="$(find "$b" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)"
  [ -n "$tree" ] || die "no unpacked kubernetes-* tree in $b"
  # Debian version "1.20.5+really1.20.2-..." -> upstream v1.20.2
  local ver
  ver="$(cd "$tree" && dpkg-parsechangelog -S Version 2>/dev/null || true)"
  ver="${ver%%-*}"; ver="${ver##*really}"; ver="${ver#*:}"
  [ -n "$ver" ] || ver="1.20.2"
  # Kubernetes 1.20 vendors modern-go/reflect2 1.0.1, whose map iteration crashes
  # (SIGSEGV in mapiternext) when built with Go >= 1.18, as soon as a custom resource
  # is encoded. Debian's reflect2 1.0.2 has the fix; use it instead.
  local reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
  [ -d "$reflect2" ] || die "golang-github-modern-go-reflect2-dev is not installed"
  rm -rf "$tree/vendor/github.com/modern-go/reflect2"
  cp -r "$reflect2" "$tree/vendor/github.com/modern-go/reflect2"
  if apiserver_ok; then
    log "kube-apiserver cached: $KUBE_APISERVER ($("$KUBE_APISERVER" --version 2>&1))"
  else
    build_apiserver "$tree" "$ver" "$b"
  fi
  fake_kubelet_ok || build_fake_kubelet "$tree" "$b"
  if [ -z "${APIGATE_TESTBED_KEEP_BUILD:-}" ]; then
    log "removing build tree $b (set APIGATE_TESTBED_KEEP_BUILD=1 to keep)"
    rm -rf "$b"
  fi
}

build_apiserver() { # TREE VERSION BUILDDIR
  local tree=$1 ver=$2 b=$3
  log "building kube-apiserver v$ver in $tree (takes ~7+ minutes on 2 cores; log: $b/build.log)"
  local start=$SECONDS
  (
    cd "$tree"
    mkdir -p .go/src/k8s.io
    ln -sfn ../../.. .go/src/k8s.io/kubernetes
    # The Debian tarball is a `git archive` export: hack/lib/version.sh already
    # carries the v1.20.2 tag, so no KUBE_GIT_* overrides are needed.
    export GOPATH="$PWD/.go" CGO_ENABLED=0
    make WHAT=cmd/kube-apiserver
  ) >"$b/build.log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 30
    kill -0 "$pid" 2>/dev/null && log "  ... still building ($((SECONDS - start))s)"
  done
  if ! wait "$pid"; then
    tail -n 40 "$b/build.log" >&2
    die "kube-apiserver build failed (see $b/build.log)"
  fi
  log "build finished in $((SECONDS - start))s"
  local out
  # Lands in _output/local/bin/linux/<arch>/ (also _output/local/go/bin/; _output/bin is a symlink).
  out="$(find "$tree/_output/local/bin" "$tree/_output" -type f -name kube-apiserver -perm -u+x 2>/dev/null | head -n1)"
  [ -n "$out" ] || die "built kube-apiserver binary not found under $tree/_output"
  install -m 0755 "$out" "$KUBE_APISERVER"
  echo "$APISERVER_STAMP" >"$KUBE_APISERVER.build"
  apiserver_ok || die "built kube-apiserver does not run"
  log "kube-apiserver cached: $KUBE_APISERVER ($("$KUBE_APISERVER" --version 2>&1)) from $out"
}

# The fake kubelet uses the kubelet's own exec server code
# (k8s.io/kubernetes/pkg/kubelet/cri/streaming/remotecommand) from the tree. It is
# built with the same GOPATH layout, Go cache and tags as `make` (hack/lib/golang.sh),
# so right after the kube-apiserver build almost everything is a cache hit.
build_fake_kubelet() { # TREE BUILDDIR
  local tree b=$2
  tree="$(cd "$1" && pwd -P)" # same spelling as make's KUBE_ROOT, or the Go cache misses
  log "building fake-kubelet in $tree (log: $b/fake-kubelet-build.log)"
  rm -rf "$tree/cmd/apigate-fake-kubelet"
  mkdir -p "$tree/cmd/apigate-fake-kubelet"
  cp "$FAKE_KUBELET_SRC/main.go" "$tree/cmd/apigate-fake-kubelet/"
  local start=$SECONDS
  (
    cd "$tree"
    mkdir -p _output/local/go/src/k8s.io
    ln -sfn "$tree" _output/local/go/src/k8s.io/kubernetes
    export GO111MODULE=off GOFLAGS= CGO_ENABLED=0 \
      GOPATH="$tree/_output/local/go" GOCACHE="$tree/_output/local/go/cache"
    cd _output/local/go/src/k8s.io/kubernetes
    go build -tags selinux,notest -ldflags '-s -w' -o "$b/fake-kubelet" ./cmd/apigate-fake-kubelet
  ) >"$b/fake-kubelet-build.log" 2>&1 \
    || { tail -n 40 "$b/fake-kubelet-build.log" >&2; die "fake-kubelet build failed (see $b/fake-kubelet-build.log)"; }
  install -m 0755 "$b/fake-kubelet" "$FAKE_KUBELET"
  fake_kubelet_stamp >"$FAKE_KUBELET.build"
  fake_kubelet_ok || die "built fake-kubelet does not run"
  log "fake-kubelet built in $((SECONDS - start))s: $FAKE_KUBELET"
}

cmd_install() {
  [ "$(id -u)" = 0 ] || { apiserver_ok && kubectl_ok && fake_kubelet_ok && { log "binaries cached in $BIN"; return; }; die "install must run as root"; }
  export DEBIAN_FRONTEND=noninteractive
  local start=$SECONDS
  install_packages
  install_kubectl
  build_from_source
  log "install done in $((SECONDS - start))s; binaries in $BIN"
}

# ---------------------------------------------------------------------------
# up / down / env
# ---------------------------------------------------------------------------

need_bins() {
  apiserver_ok || die "no working $KUBE_APISERVER; run: $0 install"
  kubectl_ok || die "no working $KUBECTL; run: $0 install"
  fake_kubelet_ok || die "no up-to-date $FAKE_KUBELET; run: $0 install"
  command -v etcd >/dev/null || die "etcd not found; run: $0 install"
  command -v openssl >/dev/null || die "openssl not found; run: $0 install"
  command -v curl >/dev/null || die "curl not found; run: $0 install"
  command -v python3 >/dev/null || die "python3 not found; run: $0 install"
}

# Print N distinct free TCP ports on 127.0.0.1 (all bound at once, then released).
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

# sign NAME CA_PREFIX SUBJ EXTFILE_CONTENT
sign() {
  local name=$1 ca=$2 subj=$3 ext=$4
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr"
  printf '%s\n' "$ext" >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 3650 -sha256 \
    -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

mkca() {
  local name=$1 cn=$2
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/$name.key" 2>/dev/null
  openssl req -x509 -new -key "$PKI/$name.key" -subj "/CN=$cn" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$PKI/$name.crt"
}

gen_pki() {
  mkdir -p "$PKI"
  chmod 0700 "$PKI"
  local client_ext="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth
authorityKeyIdentifier=keyid
subjectKeyIdentifier=hash"
  mkca ca apigate-testbed-ca
  mkca front-proxy-ca apigate-testbed-front-proxy-ca
  sign apiserver ca "/CN=kube-apiserver" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
authorityKeyIdentifier=keyid
subjectKeyIdentifier=hash
subjectAltName=IP:127.0.0.1,IP:::1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  sign front-proxy-client front-proxy-ca "/CN=apigate-front-proxy" "$client_ext"
  sign admin ca "/O=system:masters/CN=admin" "$client_ext"
  sign alice ca "/O=devs/O=testers/CN=alice" "$client_ext"
  # Serving cert of the fake kubelet; kube-apiserver verifies it with
  # --kubelet-certificate-authority=ca.crt (the host it dials is the node's InternalIP).
  sign kubelet ca "/O=system:nodes/CN=system:node:fake-node" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
authorityKeyIdentifier=keyid
subjectKeyIdentifier=hash
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:fake-node"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
  openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
  cat >"$PKI/tokens.csv" <<'EOF'
admin-token,admin-tok,uid-admin-tok,"system:masters"
bob-token,bob,uid-bob,"devs"
EOF
  chmod 0600 "$PKI"/*.key
}

# pid_alive PID: the process exists and is not a zombie.
pid_alive() {
  local st
  [ -r "/proc/$1/stat" ] || return 1
  st="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}

# owned PID DIR: the process was started by `up DIR` (guards against pid reuse).
owned() {
  pid_alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2/"
}

start_bg() { # LOGFILE CMD...
  local logf=$1; shift
  setsid "$@" </dev/null >>"$logf" 2>&1 &
  echo $!
}

wait_http() { # NAME PID LOG TIMEOUT CURL-ARGS...
  local name=$1 pid=$2 logf=$3 timeout=$4; shift 4
  local deadline=$((SECONDS + timeout)) out
  while :; do
    if out="$(curl -sS --max-time 5 "$@" 2>&1)" && [ "$out" = ok ] ; then
      return 0
    fi
    if ! pid_alive "$pid"; then
      log "$name (pid $pid) exited; last log lines:"
      tail -n 40 "$logf" >&2
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "$name not ready after ${timeout}s (last answer: $out); last log lines:"
      tail -n 40 "$logf" >&2
      return 1
    fi
    sleep 0.5
  done
}

write_kubeconfig() { # FILE SERVER USER-ARGS...
  local f=$1 server=$2; shift 2
  cat >"$f" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster:
    server: https://$server
    certificate-authority: $PKI/ca.crt
users:
- name: user
  user:
$(printf '    %s\n' "$@")
contexts:
- name: testbed
  context:
    cluster: testbed
    user: user
current-context: testbed
EOF
  chmod 0600 "$f"
}

# create_exec_objects DIR KUBELET_PORT APISERVER_ADDR: Node fake-node (reached at
# 127.0.0.1:KUBELET_PORT), Pod default/fake-pod bound to it, the ServiceAccount the
# ServiceAccount admission plugin insists on (no controller-manager creates it), and
# pods/exec for group devs. Node status is kept on create; pod status is not (it is
# reset to Pending), so it is patched to Running through the status subresource
# (not needed for exec, but port-forward/attach-style checks want Running).
create_exec_objects() {
  local dir=$1 port=$2 addr=$3
  log "creating Node fake-node, Pod default/fake-pod and RBAC pod-exec for group devs"
  "$KUBECTL" --kubeconfig "$dir/kubeconfig-admin" apply -f - >"$dir/logs/exec-objects.log" 2>&1 <<EOF \
    || { cat "$dir/logs/exec-objects.log" >&2; die "creating fake-kubelet objects failed"; }
apiVersion: v1
kind: Node
metadata:
  name: fake-node
  labels: {kubernetes.io/hostname: fake-node}
status:
  addresses:
  - {type: InternalIP, address: 127.0.0.1}
  daemonEndpoints:
    kubeletEndpoint: {Port: $port}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: default, namespace: default}
---
apiVersion: v1
kind: Pod
metadata: {name: fake-pod, namespace: default, labels: {app: fake-pod}}
spec:
  nodeName: fake-node
  automountServiceAccountToken: false
  containers:
  - {name: main, image: apigate.invalid/fake-kubelet:none}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: pod-exec}
rules:
- apiGroups: [""]
  resources: ["pods/exec"]
  verbs: ["create"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: pod-exec-devs}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: pod-exec}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: devs}
EOF
  curl -sS --fail --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    -X PATCH -H 'Content-Type: application/merge-patch+json' \
    -d '{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}],"containerStatuses":[{"name":"main","ready":true,"started":true,"restartCount":0,"image":"apigate.invalid/fake-kubelet:none","imageID":"","state":{"running":{"startedAt":"2021-01-01T00:00:00Z"}}}]}}' \
    "https://$addr/api/v1/namespaces/default/pods/fake-pod/status" >>"$dir/logs/exec-objects.log" 2>&1 \
    || { cat "$dir/logs/exec-objects.log" >&2; die "patching fake-pod status failed"; }
}

UP_OK=0
UP_DIR=""
up_cleanup() {
  if [ "$UP_OK" = 0 ] && [ -n "$UP_DIR" ] && [ -z "${APIGATE_TESTBED_KEEP_ON_FAIL:-}" ]; then
    log "up failed; stopping what was started (set APIGATE_TESTBED_KEEP_ON_FAIL=1 to keep)"
    cmd_down "$UP_DIR" || true
  fi
}

cmd_up() {
  local dir=$1
  need_bins
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd -P)"
  if [ -f "$dir/pids" ]; then
    local p
    while read -r p; do
      [ -n "$p" ] && owned "$p" "$dir" && die "testbed in $dir is already running (pid $p); run: $0 down $dir"
    done <"$dir/pids"
  fi
  # Start from a clean slate for anything we own in DIR.
  rm -rf "$dir/pki" "$dir/etcd" "$dir/logs" "$dir"/certs-* "$dir/testbed.env" "$dir/pids" "$dir"/kubeconfig-*
  mkdir -p "$dir/logs"
  : >"$dir/pids"
  UP_DIR=$dir
  trap up_cleanup EXIT

  PKI="$dir/pki"
  log "generating PKI in $PKI"
  gen_pki

  local ports
  read -r -a ports <<<"$(free_ports $((3 + NREPLICAS)))"
  local etcd_port=${ports[0]} etcd_peer=${ports[1]} kubelet_port=${ports[$((2 + NREPLICAS))]}
  local etcd_url="http://127.0.0.1:$etcd_port"

  log "starting etcd on $etcd_url"
  local etcd_pid
  etcd_pid="$(start_bg "$dir/logs/etcd.log" env -u ETCD_UNSUPPORTED_ARCH etcd \
    --name testbed \
    --data-dir "$dir/etcd" \
    --listen-client-urls "$etcd_url" \
    --advertise-client-urls "$etcd_url" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "testbed=http://127.0.0.1:$etcd_peer" \
    --initial-cluster-state new)"
  echo "$etcd_pid" >>"$dir/pids"
  wait_http etcd "$etcd_pid" "$dir/logs/etcd.log" 30 \
    -o /dev/null -w 'ok' "$etcd_url/health" || die "etcd did not become healthy"

  local i port addrs=() pids=()
  for ((i = 0; i < NREPLICAS; i++)); do
    port=${ports[$((2 + i))]}
    mkdir -p "$dir/certs-$i"
    log "starting kube-apiserver $i on 127.0.0.1:$port"
    local pid
    pid="$(start_bg "$dir/logs/apiserver-$i.log" "$KUBE_APISERVER" \
      --etcd-servers="$etcd_url" \
      --bind-address=127.0.0.1 \
      --secure-port="$port" \
      --insecure-port=0 \
      --advertise-address=127.0.0.1 \
      --tls-cert-file="$PKI/apiserver.crt" \
      --tls-private-key-file="$PKI/apiserver.key" \
      --client-ca-file="$PKI/ca.crt" \
      --token-auth-file="$PKI/tokens.csv" \
      --authorization-mode=RBAC \
      --service-account-key-file="$PKI/sa.pub" \
      --service-account-signing-key-file="$PKI/sa.key" \
      --service-account-issuer=https://kubernetes.default.svc \
      --service-cluster-ip-range=10.96.0.0/24 \
      --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
      --requestheader-allowed-names=apigate-front-proxy \
      --requestheader-username-headers=X-Remote-User \
      --requestheader-group-headers=X-Remote-Group \
      --requestheader-extra-headers-prefix=X-Remote-Extra- \
      --endpoint-reconciler-type=none \
      --shutdown-delay-duration=2s \
      --cert-dir="$dir/certs-$i" \
      --allow-privileged=true \
      --kubelet-certificate-authority="$PKI/ca.crt" \
      --kubelet-client-certificate="$PKI/apiserver.crt" \
      --kubelet-client-key="$PKI/apiserver.key" \
      --kubelet-preferred-address-types=InternalIP \
      ${APIGATE_TESTBED_APISERVER_EXTRA_ARGS:-})"
    echo "$pid" >>"$dir/pids"
    pids+=("$pid")
    addrs+=("127.0.0.1:$port")
  done

  for ((i = 0; i < NREPLICAS; i++)); do
    wait_http "kube-apiserver $i" "${pids[$i]}" "$dir/logs/apiserver-$i.log" "$READY_TIMEOUT" \
      --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
      "https://${addrs[$i]}/readyz" || die "kube-apiserver $i did not become ready"
    log "kube-apiserver $i ready at ${addrs[$i]}"
  done

  write_kubeconfig "$dir/kubeconfig-admin" "${addrs[0]}" \
    "client-certificate: $PKI/admin.crt" "client-key: $PKI/admin.key"
  write_kubeconfig "$dir/kubeconfig-alice" "${addrs[0]}" \
    "client-certificate: $PKI/alice.crt" "client-key: $PKI/alice.key"
  write_kubeconfig "$dir/kubeconfig-bob" "${addrs[0]}" "token: bob-token"

  log "creating test RBAC (ClusterRole pod-reader bound to group devs)"
  "$KUBECTL" --kubeconfig "$dir/kubeconfig-admin" apply -f - >"$dir/logs/rbac.log" 2>&1 <<'EOF' \
    || { cat "$dir/logs/rbac.log" >&2; die "creating RBAC failed"; }
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: pod-reader
rules:
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: pod-reader-devs
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: pod-reader
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: Group
  name: devs
EOF

  # Fake kubelet: lets `kubectl exec` reach a "container" (fake-kubelet/main.go).
  log "starting fake-kubelet on 127.0.0.1:$kubelet_port"
  local kubelet_pid
  kubelet_pid="$(start_bg "$dir/logs/fake-kubelet.log" "$FAKE_KUBELET" \
    -listen "127.0.0.1:$kubelet_port" \
    -tls-cert-file "$PKI/kubelet.crt" -tls-private-key-file "$PKI/kubelet.key" \
    -client-ca-file "$PKI/ca.crt" -work-dir "$dir")"
  echo "$kubelet_pid" >>"$dir/pids"
  wait_http fake-kubelet "$kubelet_pid" "$dir/logs/fake-kubelet.log" 30 \
    --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$kubelet_port/healthz" || die "fake-kubelet did not become ready"
  create_exec_objects "$dir" "$kubelet_port" "${addrs[0]}"

  local ifs_save=$IFS
  IFS=,
  cat >"$dir/testbed.env" <<EOF
TESTBED_DIR=$dir
KUBECTL=$KUBECTL
KUBE_APISERVER=$KUBE_APISERVER
ETCD_URL=$etcd_url
ETCD_PID=$etcd_pid
APISERVER_ADDRS=${addrs[*]}
APISERVER_PIDS=${pids[*]}
PKI=$PKI
CA_CERT=$PKI/ca.crt
FRONT_PROXY_CA_CERT=$PKI/front-proxy-ca.crt
FRONT_PROXY_CLIENT_CERT=$PKI/front-proxy-client.crt
FRONT_PROXY_CLIENT_KEY=$PKI/front-proxy-client.key
KUBECONFIG_ADMIN=$dir/kubeconfig-admin
KUBECONFIG_ALICE=$dir/kubeconfig-alice
KUBECONFIG_BOB=$dir/kubeconfig-bob
ADMIN_TOKEN=admin-token
BOB_TOKEN=bob-token
FAKE_KUBELET=$FAKE_KUBELET
FAKE_KUBELET_ADDR=127.0.0.1:$kubelet_port
FAKE_KUBELET_PID=$kubelet_pid
FAKE_NODE=fake-node
EXEC_NAMESPACE=default
EXEC_POD=fake-pod
EXEC_CONTAINER=main
EOF
  IFS=$ifs_save
  UP_OK=1
  trap - EXIT
  log "testbed up: etcd $etcd_url, kube-apiservers ${addrs[*]}"
  echo "$dir/testbed.env"
}

# stop_pids PID...: SIGTERM, wait up to 10 s, then SIGKILL whatever is left.
stop_pids() {
  [ $# -gt 0 ] || return 0
  local p remaining deadline=$((SECONDS + 10))
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  while :; do
    remaining=()
    for p in "$@"; do pid_alive "$p" && remaining+=("$p"); done
    [ "${#remaining[@]}" -eq 0 ] && return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "down: killing ${remaining[*]} after 10s"
      for p in "${remaining[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
      sleep 0.2
      return 0
    fi
    sleep 0.2
  done
}

cmd_down() {
  local dir=$1
  [ -d "$dir" ] || { log "down: $dir does not exist; nothing to do"; return 0; }
  dir="$(cd "$dir" && pwd -P)"
  [ -f "$dir/pids" ] || { log "down: no $dir/pids; nothing to do"; return 0; }
  local p live=()
  while read -r p; do
    [[ "$p" =~ ^[0-9]+$ ]] || continue
    if owned "$p" "$dir"; then
      live+=("$p")
    fi
  done <"$dir/pids"
  if [ "${#live[@]}" -eq 0 ]; then
    log "down: nothing running for $dir"
    return 0
  fi
  log "down: stopping pids ${live[*]}"
  # kube-apiservers (and the fake kubelet) first (they talk to etcd while shutting down), then etcd.
  local first=() last=()
  for p in "${live[@]}"; do
    if [ "$(cat "/proc/$p/comm" 2>/dev/null)" = etcd ]; then last+=("$p"); else first+=("$p"); fi
  done
  stop_pids "${first[@]}"
  stop_pids "${last[@]}"
  log "down: stopped"
  return 0
}

cmd_env() {
  local dir=$1
  [ -f "$dir/testbed.env" ] || die "no $dir/testbed.env (is the testbed up?)"
  cat "$dir/testbed.env"
}

case "${1:-}" in
  install) [ $# -eq 1 ] || usage; cmd_install ;;
  up) [ $# -eq 2 ] || usage; cmd_up "$2" ;;
  down) [ $# -eq 2 ] || usage; cmd_down "$2" ;;
  env) [ $# -eq 2 ] || usage; cmd_env "$2" ;;
  *) usage ;;
esac
