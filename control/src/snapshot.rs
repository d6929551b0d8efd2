//! The immutable snapshot the proxy serves from.
//!
//! A snapshot holds everything the hot path needs already prepared: the SNI → route map,
//! each route's rustls server config, its upstream trust and identity, its backends. The
//! proxy loads it with one `ArcSwap::load` per connection or request and never sees a
//! half-applied change. State that must outlive a snapshot (in-flight counts, ejections,
//! connection pools) lives in the proxy, keyed by backend identity, not in here.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;

use crate::access::{AccessPolicy, CidrSet};
use crate::model::{Balancing, ListenerKind, ProxyProtocolMode, RouteMode};

/// Identity of a route: namespace and name of its `ApiServerRoute`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId {
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the object.
    pub name: String,
}

impl fmt::Display for RouteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One compiled configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// Gateway-wide settings.
    pub gateway: GatewaySettings,
    /// Routes in a stable order (by id).
    pub routes: Vec<Arc<Route>>,
    hosts: HashMap<String, usize>,
    destinations: HashMap<String, usize>,
}

impl Snapshot {
    /// Assemble a snapshot; `routes` must already be validated (unique ids and hostnames).
    pub(crate) fn new(gateway: GatewaySettings, mut routes: Vec<Arc<Route>>) -> Self {
        routes.sort_by(|a, b| a.id.cmp(&b.id));
        let mut hosts = HashMap::new();
        let mut destinations = HashMap::new();
        for (index, route) in routes.iter().enumerate() {
            for host in &route.hostnames {
                hosts.insert(host.clone(), index);
            }
            for destination in &route.destinations {
                destinations.insert(destination.clone(), index);
            }
        }
        let snapshot = Snapshot {
            gateway,
            routes,
            hosts,
            destinations,
        };
        #[cfg(debug_assertions)]
        snapshot.check_invariants();
        snapshot
    }

    /// The route whose hostnames include `sni` (compared case-insensitively).
    pub fn route_for_sni(&self, sni: &str) -> Option<&Arc<Route>> {
        let index = match self.hosts.get(sni) {
            Some(i) => *i,
            None => *self.hosts.get(&sni.to_ascii_lowercase())?,
        };
        self.routes.get(index)
    }

    /// The route a CONNECT destination header names. Matching is exact (after
    /// lowercasing): a value that merely contains a route's name selects nothing, so no
    /// crafted value can reach a route other than the one it names.
    pub fn route_for_destination(&self, destination: &str) -> Option<&Arc<Route>> {
        let index = *self
            .destinations
            .get(destination.trim().to_ascii_lowercase().as_str())?;
        self.routes.get(index)
    }

    /// The route with this id.
    pub fn route(&self, id: &RouteId) -> Option<&Arc<Route>> {
        self.routes
            .binary_search_by(|r| r.id.cmp(id))
            .ok()
            .and_then(|i| self.routes.get(i))
    }

    /// What changed from `old` to `self`, for logs and metrics on reload.
    pub fn diff(&self, old: &Snapshot) -> SnapshotDiff {
        let mut diff = SnapshotDiff {
            added: Vec::new(),
            removed: Vec::new(),
            changed: Vec::new(),
            gateway_changed: self.gateway != old.gateway,
        };
        for pair in pair_by_id(&old.routes, &self.routes, |r| r, |r| r) {
            match pair {
                Paired::Old(route) => diff.removed.push(route.id.clone()),
                Paired::New(route) => diff.added.push(route.id.clone()),
                Paired::Both(before, after) => {
                    if !Arc::ptr_eq(before, after) && before.fingerprint != after.fingerprint {
                        diff.changed.push(after.id.clone());
                    }
                }
            }
        }
        diff
    }

    /// Panics if the snapshot breaks an invariant the proxy relies on. Run after every
    /// compile in debug builds and in tests.
    pub fn check_invariants(&self) {
        for (host, index) in &self.hosts {
            let route = &self.routes[*index];
            assert!(
                route.hostnames.contains(host),
                "host map points to wrong route"
            );
            assert_eq!(host, &host.to_ascii_lowercase(), "hostnames are lowercase");
        }
        for (destination, index) in &self.destinations {
            assert!(self.routes[*index].destinations.contains(destination));
        }
        // A route may have no backends: a Service whose replicas are all gone is a
        // real state (requests get 503), not a broken snapshot.
        for route in &self.routes {
            if let Mode::Terminate(t) = &route.mode {
                assert!(
                    !t.upstream.ca.is_empty(),
                    "route {} has no upstream CA",
                    route.id
                );
                assert!(
                    !t.client_auth || t.upstream.front_proxy.is_some(),
                    "route {} verifies client certs but has no front-proxy identity",
                    route.id
                );
            }
        }
        let ids: BTreeSet<_> = self.routes.iter().map(|r| &r.id).collect();
        assert_eq!(ids.len(), self.routes.len(), "route ids are unique");
    }
}

/// One route of two lists sorted by route id, matched by id.
#[derive(Debug)]
pub enum Paired<'a, A, B> {
    /// Only in the old list.
    Old(&'a A),
    /// Only in the new list.
    New(&'a B),
    /// In both.
    Both(&'a A, &'a B),
}

/// Walk two lists of routes sorted by id (a snapshot's, or what the proxy built from
/// one) side by side, matching routes by id. One pass over both, and a route both
/// share (the same allocation: unchanged) costs no comparison of ids, so a change
/// between snapshots of thousands of routes costs little more than what changed.
pub fn pair_by_id<'a, A, B>(
    old: &'a [A],
    new: &'a [B],
    old_route: fn(&A) -> &Arc<Route>,
    new_route: fn(&B) -> &Arc<Route>,
) -> impl Iterator<Item = Paired<'a, A, B>> {
    let (mut i, mut j) = (0, 0);
    std::iter::from_fn(move || match (old.get(i), new.get(j)) {
        (None, None) => None,
        (Some(a), None) => {
            i += 1;
            Some(Paired::Old(a))
        }
        (None, Some(b)) => {
            j += 1;
            Some(Paired::New(b))
        }
        (Some(a), Some(b)) => {
            let (ra, rb) = (old_route(a), new_route(b));
            let order = if Arc::ptr_eq(ra, rb) {
                std::cmp::Ordering::Equal
            } else {
                ra.id.cmp(&rb.id)
            };
            match order {
                std::cmp::Ordering::Less => {
                    i += 1;
                    Some(Paired::Old(a))
                }
                std::cmp::Ordering::Greater => {
                    j += 1;
                    Some(Paired::New(b))
                }
                std::cmp::Ordering::Equal => {
                    i += 1;
                    j += 1;
                    Some(Paired::Both(a, b))
                }
            }
        }
    })
}

/// Route-level changes between two snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotDiff {
    /// Routes only in the new snapshot.
    pub added: Vec<RouteId>,
    /// Routes only in the old snapshot.
    pub removed: Vec<RouteId>,
    /// Routes in both whose content changed.
    pub changed: Vec<RouteId>,
    /// Whether gateway-wide settings changed.
    pub gateway_changed: bool,
}

impl SnapshotDiff {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && !self.gateway_changed
    }
}

/// Gateway-wide settings with defaults applied: what the listeners need before a
/// route is known, and what the HTTP engine is built with at start.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewaySettings {
    /// Listeners.
    pub listeners: Vec<Listener>,
    /// CONNECT destination header name (lowercase).
    pub destination_header: String,
    /// Admin listener address.
    pub admin: Option<SocketAddr>,
    /// The bearer token state-changing admin actions require from non-loopback
    /// clients (`None`: loopback clients only).
    pub admin_token: Option<AdminToken>,
    /// PROXY header, CONNECT request, ClientHello and TLS handshake together must
    /// finish within this; it bounds admission, before any route is known.
    pub handshake_timeout: Duration,
    /// The defaults every route was compiled with. The data plane reads a route's own
    /// [`RouteSettings`]; these are only read at start, for settings the HTTP engine
    /// fixes per process (HTTP/2 idle timeout and header-list bound).
    pub defaults: RouteSettings,
    /// How new revisions reach the routes (off by default).
    pub rollout: crate::rollout_settings::RolloutSettings,
    /// HTTP/2 towards clients.
    pub http2: Http2Settings,
    /// Caps on open client connections, and their TCP keepalive.
    pub connections: ConnectionSettings,
    /// The access log (`None`: off). Shared by every line logged under it.
    pub access_log: Option<Arc<AccessLogSettings>>,
}

/// The access log's settings with the defaults applied; present only when it is on.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogSettings {
    /// How lines are written.
    pub format: crate::model::AccessLogFormat,
    /// Share of successful requests logged, 0 to 1.
    pub success_sample_ratio: f64,
    /// Failed requests and apigate's own answers are logged whatever the sampling.
    pub always_log_errors: bool,
    /// The file lines are appended to (`None`: standard output).
    pub path: Option<Arc<str>>,
}

/// Caps on open client connections and their TCP keepalive, with the defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionSettings {
    /// All connections together.
    pub max: usize,
    /// Connections of one route.
    pub per_route: usize,
    /// Connections from one client address (`None`: no cap).
    pub per_source: Option<usize>,
    /// TCP keepalive of client sockets: silence before the first probe.
    pub keepalive_idle: Duration,
    /// Time between probes.
    pub keepalive_interval: Duration,
    /// Unanswered probes that close the connection.
    pub keepalive_probes: u32,
}

/// HTTP/2 towards clients, with the defaults applied. The advertised settings are
/// fixed when the HTTP engine starts; the abuse bounds apply to each new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Http2Settings {
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub max_concurrent_streams: u32,
    /// `SETTINGS_INITIAL_WINDOW_SIZE`.
    pub initial_stream_window: u32,
    /// The connection's receive window, raised by a WINDOW_UPDATE after the preface.
    pub initial_connection_window: u32,
    /// Stream resets a client may send within one second.
    pub max_resets_per_second: u32,
    /// Streams a client may reset before they are accepted (the HTTP/2 layer's bound).
    pub max_pending_reset_streams: u32,
    /// Control frames a client may send within one second (see `Http2Spec`).
    pub max_control_frames_per_second: u32,
    /// Silence from a client after which apigate sends a PING.
    pub keepalive_interval: Duration,
    /// Time a client has to answer that PING.
    pub keepalive_timeout: Duration,
    /// Interval of PINGs to replicas.
    pub upstream_ping_interval: Duration,
    /// Receive window of each upstream stream.
    pub upstream_stream_window: u32,
}

/// The verifier of a route's client certificates, kept apart from its server config
/// so that a configuration change can re-check open connections against it.
pub type ClientVerifier = Arc<dyn rustls::server::danger::ClientCertVerifier>;

/// A bearer token; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(pub Arc<str>);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// Whether `presented` is the token, compared in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// A listener.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Name for logs and metrics.
    pub name: String,
    /// Bind address.
    pub address: SocketAddr,
    /// TLS (route by SNI) or CONNECT (route by destination header).
    pub kind: ListenerKind,
    /// PROXY protocol expectation.
    pub proxy_protocol: ProxyProtocolMode,
    /// Trusted PROXY senders as written (for equality and logs).
    pub trusted_proxies: Vec<String>,
    /// Trusted PROXY senders, compiled.
    pub trusted: CidrSet,
}

impl Listener {
    /// Whether `peer` may send a PROXY header on this listener.
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        self.trusted.contains(peer)
    }
}

impl PartialEq for Listener {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.address == other.address
            && self.kind == other.kind
            && self.proxy_protocol == other.proxy_protocol
            && self.trusted_proxies == other.trusted_proxies
    }
}

impl Eq for Listener {}

/// A route's settings with the gateway defaults applied at compile time, so the data
/// plane reads one place per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteSettings {
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Passive ejection of failing replicas.
    pub ejection: Ejection,
    /// Largest request head (request line or pseudo-headers plus header fields) accepted
    /// from a client; larger ones get 431 and are never forwarded.
    pub max_request_header_bytes: usize,
    /// How a replica that is new or back from ejection or unreadiness ramps up.
    pub slow_start: SlowStart,
}

/// Slow start with the defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlowStart {
    /// Length of the ramp; zero turns slow start off.
    pub window: Duration,
    /// Share at the start of the ramp, percent of a full share (1..=100).
    pub min_weight_percent: u8,
}

/// Active health checks of a route's replicas, with the defaults applied.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    /// Time between probes of one replica (jittered by the prober).
    pub interval: Duration,
    /// A probe without an answer within this failed.
    pub timeout: Duration,
    /// Passed probes in a row that make an unready replica ready.
    pub healthy_threshold: u32,
    /// Failed probes in a row that make a replica unready.
    pub unhealthy_threshold: u32,
    /// Path probed over HTTPS (terminate mode); passthrough routes get TCP checks.
    pub path: String,
    /// Who the probe says it is.
    pub credentials: ProbeCredentials,
}

impl fmt::Debug for HealthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthCheck")
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("healthy_threshold", &self.healthy_threshold)
            .field("unhealthy_threshold", &self.unhealthy_threshold)
            .field("path", &self.path)
            .field("credentials", &self.credentials.kind())
            .finish()
    }
}

/// The identity a probe presents to a replica.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum ProbeCredentials {
    /// None: works where kube-apiserver allows anonymous `/readyz`.
    Anonymous,
    /// A bearer token (Gardener's health-check token).
    Token(String),
    /// The route's front-proxy certificate, asserting this user (`X-Remote-User`).
    FrontProxy {
        /// The user kube-apiserver authorizes the probe as.
        user: String,
    },
}

impl ProbeCredentials {
    /// Kind, for logs and metrics (never the token).
    pub fn kind(&self) -> &'static str {
        match self {
            ProbeCredentials::Anonymous => "anonymous",
            ProbeCredentials::Token(_) => "token",
            ProbeCredentials::FrontProxy { .. } => "front_proxy",
        }
    }
}

/// Timeouts with defaults applied; see [`crate::model::Defaults`] for meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timeouts {
    /// Upstream connect (TCP + TLS).
    pub connect: Duration,
    /// Silence allowed reading an ordinary response.
    pub request: Duration,
    /// Silence allowed on watches and upgraded streams.
    pub long_running: Duration,
    /// Upstream connections are not reused past this age.
    pub upstream_max_connection_age: Duration,
    /// Every request head (HTTP/1.1) or header block (HTTP/2) must arrive within this
    /// from its first byte; the first one within this of the handshake.
    pub request_header: Duration,
    /// Idle downstream connection.
    pub idle: Duration,
}

/// Passive ejection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ejection {
    /// Consecutive failures that eject.
    pub consecutive_failures: u32,
    /// First ejection time.
    pub base: Duration,
    /// Upper bound of ejection time.
    pub max: Duration,
    /// At most this share of a route's replicas is ejected at once (one always may be).
    pub max_ejected_percent: u8,
}

/// A compiled route: the one runtime description of an API server behind apigate.
pub struct Route {
    /// Namespace/name of the `ApiServerRoute`.
    pub id: RouteId,
    /// Lowercased SNI names.
    pub hostnames: Vec<String>,
    /// Terminate (with its TLS material) or pass through.
    pub mode: Mode,
    /// Backend replica addresses.
    pub backends: Vec<SocketAddr>,
    /// Replicas whose endpoint is terminating (Kubernetes source): no new requests,
    /// visible as draining until their work ends.
    pub draining: Vec<SocketAddr>,
    /// Source-IP allowlist (allow-all when none is configured).
    pub access: AccessPolicy,
    /// Lowercased CONNECT destination values that select this route.
    pub destinations: Vec<String>,
    /// Timeouts, ejection and limits, with the gateway defaults applied.
    pub settings: RouteSettings,
    /// Active health checks (`None`: turned off).
    pub health: Option<HealthCheck>,
    /// Flow control (`None`: nothing to limit).
    pub flow_control: Option<Arc<crate::flow_settings::FlowControl>>,
    /// Hash of everything above, to tell changed routes apart in diffs.
    pub fingerprint: u64,
}

impl Route {
    /// The TLS material, in terminate mode.
    pub fn terminate(&self) -> Option<&Terminate> {
        match &self.mode {
            Mode::Terminate(t) => Some(t),
            Mode::Passthrough => None,
        }
    }
}

/// How a route handles its connections; terminate mode carries everything it needs,
/// so a mode and its material can never disagree.
pub enum Mode {
    /// apigate terminates TLS and balances every request.
    Terminate(Box<Terminate>),
    /// apigate splices the TLS stream to one replica per connection.
    Passthrough,
}

impl Mode {
    /// The mode as configured.
    pub fn kind(&self) -> RouteMode {
        match self {
            Mode::Terminate(_) => RouteMode::Terminate,
            Mode::Passthrough => RouteMode::Passthrough,
        }
    }
}

/// What terminate mode needs.
pub struct Terminate {
    /// Server config presenting the route's certificate; client certs are requested
    /// (never required) when `client_auth` is set.
    pub server_tls: Arc<rustls::ServerConfig>,
    /// Whether client certificates are verified and turned into identity headers.
    pub client_auth: bool,
    /// The verifier of client certificates (with `client_auth`): open connections are
    /// re-checked against it when the client CAs change.
    pub client_verifier: Option<ClientVerifier>,
    /// Identifies the client CA bundle (0 without one).
    pub client_ca_fingerprint: u64,
    /// When the certificates the route holds expire.
    pub expiry: CertificateExpiry,
    /// Upstream trust and identity.
    pub upstream: UpstreamTls,
    /// Balancing policy with the default applied.
    pub balancing: Balancing,
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let terminate = self.terminate();
        f.debug_struct("Route")
            .field("id", &self.id)
            .field("hostnames", &self.hostnames)
            .field("mode", &self.mode.kind())
            .field("client_auth", &terminate.is_some_and(|t| t.client_auth))
            .field("upstream", &terminate.map(|t| &t.upstream))
            .field("balancing", &terminate.map(|t| t.balancing))
            .field("backends", &self.backends)
            .field("access", &self.access)
            .field("destinations", &self.destinations)
            .field("settings", &self.settings)
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

/// How apigate verifies replicas and proves its own identity to them.
#[derive(Clone)]
pub struct UpstreamTls {
    /// Name the replicas' certificates must carry; also sent as SNI.
    pub server_name: String,
    /// CA certificates (DER) that sign the replicas' serving certificates.
    pub ca: Vec<CertificateDer<'static>>,
    /// Front-proxy client identity; only used for requests whose client certificate
    /// was verified.
    pub front_proxy: Option<ClientIdentity>,
    /// rustls client configs (ALPN `http/1.1`) for the connections apigate makes itself
    /// (upgrades), built here so a build error is a config error, never a request's.
    pub http1: UpstreamClients,
    /// Hash of the material, so connection pools can be keyed by it and a rotated
    /// certificate never reuses a connection made with the old one.
    pub fingerprint: u64,
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .field("ca_certs", &self.ca.len())
            .field("front_proxy", &self.front_proxy.is_some())
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// Client configs mirroring the two upstream pools: without a client certificate (token
/// and anonymous requests) and with the front-proxy certificate (verified client
/// certificates only).
#[derive(Clone)]
pub struct UpstreamClients {
    /// No client certificate.
    pub anonymous: Arc<rustls::ClientConfig>,
    /// The front-proxy certificate; `None` when the route has none.
    pub front_proxy: Option<Arc<rustls::ClientConfig>>,
}

/// When each certificate file a terminating route holds stops working: a chain (serving,
/// front-proxy) at its earliest `notAfter`, a CA bundle (client CAs, upstream CA) at its
/// latest (a bundle mid-rotation holds an old CA and the new one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertificateExpiry {
    /// `spec.tls.certFile`: what clients are shown.
    pub serving: SystemTime,
    /// `spec.tls.clientCAFile`: clients' certificates stop verifying.
    pub client_ca: Option<SystemTime>,
    /// `spec.upstream.caFile`: replicas' certificates stop verifying.
    pub upstream_ca: SystemTime,
    /// `spec.upstream.frontProxyCertFile`: replicas stop trusting apigate's identity
    /// headers.
    pub front_proxy: Option<SystemTime>,
}

impl CertificateExpiry {
    /// Each certificate file held, by metric label and field, with its `notAfter`.
    pub fn each(&self) -> impl Iterator<Item = (&'static str, &'static str, SystemTime)> {
        [
            ("serving", "spec.tls.certFile", Some(self.serving)),
            ("client_ca", "spec.tls.clientCAFile", self.client_ca),
            (
                "upstream_ca",
                "spec.upstream.caFile",
                Some(self.upstream_ca),
            ),
            (
                "front_proxy",
                "spec.upstream.frontProxyCertFile",
                self.front_proxy,
            ),
        ]
        .into_iter()
        .filter_map(|(label, field, at)| Some((label, field, at?)))
    }

    /// The certificate files that expire within [`EXPIRY_WARNING`] of `now`, or have
    /// expired: what `validate` and every configuration load warn about.
    pub fn expiring(
        &self,
        now: SystemTime,
    ) -> impl Iterator<Item = (&'static str, &'static str, SystemTime)> {
        let horizon = now + EXPIRY_WARNING;
        self.each().filter(move |(_, _, at)| *at <= horizon)
    }
}

/// How long before a certificate expires apigate starts warning about it (the
/// `ApigateCertificateExpiresSoon` alert uses the same horizon).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// A client certificate chain and its key, both DER.
#[derive(Clone)]
pub struct ClientIdentity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key as DER (PKCS#8, PKCS#1 or SEC1), already checked to match the leaf.
    pub key_der: Vec<u8>,
    /// The chain's earliest `notAfter`: no upstream connection made with it is used
    /// past this.
    pub not_after: SystemTime,
}
