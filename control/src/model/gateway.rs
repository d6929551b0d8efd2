//! `GatewayConfig`: listeners, admin address and defaults shared by all routes.

use serde::Deserialize;

use super::{Duration, ObjectMeta};
use crate::error::ObjectRef;

/// Gateway-wide settings. Exactly one per configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayConfig {
    /// Always `apigate.dev/v1alpha1`.
    pub api_version: String,
    /// Always `GatewayConfig`.
    pub kind: String,
    /// Name (and optional namespace) of the object.
    pub metadata: ObjectMeta,
    /// The settings.
    pub spec: GatewaySpec,
}

impl GatewayConfig {
    /// The reference used in error messages.
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef::Named {
            kind: "GatewayConfig".into(),
            namespace: self.metadata.namespace.clone(),
            name: self.metadata.name.clone(),
        }
    }
}

/// The body of a `GatewayConfig`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// TLS listeners clients connect to (Gardener's port 443 path).
    #[serde(default)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerSpec>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminSpec>,
    /// Defaults for every route; a route may override some of them.
    #[serde(default)]
    pub defaults: Defaults,
    /// Source-IP allowlist settings shared by all routes.
    #[serde(default)]
    pub access: AccessDefaults,
    /// The in-cluster CONNECT path.
    #[serde(default)]
    pub connect: ConnectSpec,
    /// Canary rollouts of configuration revisions (off by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<super::RolloutSpec>,
    /// HTTP/2 settings of client connections and the bounds on abusive clients.
    #[serde(default)]
    pub http2: Http2Spec,
    /// Caps on open client connections, and their TCP keepalive.
    #[serde(default)]
    pub connections: ConnectionsSpec,
    /// One structured line per request (off by default).
    #[serde(default)]
    pub access_log: AccessLogSpec,
}

/// The access log: one line per request, written by its own thread through a bounded
/// buffer, so a slow log destination never slows requests (a line that finds the
/// buffer full is dropped and counted). All settings apply at the next reload.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogSpec {
    /// Write the log at all (default `false`). With it on, a request without an
    /// `Audit-ID` gets one from apigate, sent upstream, so the API server's audit log and
    /// apigate's access log join on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `json` (default) or `logfmt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<AccessLogFormat>,
    /// Share of successful requests (status below 400) logged, from 0 to 1 (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_sample_ratio: Option<f64>,
    /// Log every failed request (status 400 or above, or no response) and every
    /// request apigate answered itself, whatever the sampling (default `true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub always_log_errors: Option<bool>,
    /// Append to this file instead of writing to standard output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// How access log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum AccessLogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// `key=value` pairs, values quoted where needed.
    Logfmt,
}

/// Client connections (TLS, CONNECT and passthrough alike, from accept to close).
///
/// Caps: a connection over one is closed at once and counted. They exist so that no
/// one cluster's clients, and no one address, can take every connection the gateway
/// can hold. TCP keepalive: the kernel probes a connection silent for `tcpKeepaliveIdle`
/// and closes it when `tcpKeepaliveProbes` probes, `tcpKeepaliveInterval` apart, go
/// unanswered, so a client whose host vanished does not hold its connection (and its
/// place under the caps) until a silence limit of hours.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionsSpec {
    /// All connections together (default 100000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    /// Connections of one route (default 10000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_per_route: Option<u32>,
    /// Connections from one client address, the PROXY address where one is given
    /// (default 0: off, since a cluster's nodes often share one NAT address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_per_source: Option<u32>,
    /// Silence before the first keepalive probe (default `60s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive_idle: Option<Duration>,
    /// Time between probes (default `10s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive_interval: Option<Duration>,
    /// Unanswered probes that close the connection (default 6).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive_probes: Option<u32>,
}

/// HTTP/2 towards clients. kube-apiserver's own HTTP/2 abuse guard cannot run behind a
/// proxy that shares upstream connections (it closes the shared connection, cutting
/// every watch on it), so apigate holds these lines for every replica behind it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Http2Spec {
    /// Streams a client may have open on one connection (default 100, like Gardener's
    /// Envoy; client-go opens another connection when it needs more).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<u32>,
    /// Bytes a client may send on one stream before apigate reads them (default 65536).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_stream_window_bytes: Option<u32>,
    /// Bytes a client may send on one connection, all streams together, before apigate
    /// reads them (default 1048576).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_connection_window_bytes: Option<u32>,
    /// Streams a client may reset within one second (default 100); one more closes the
    /// connection with GOAWAY `ENHANCE_YOUR_CALM` (the "rapid reset" attack).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_resets_per_second: Option<u32>,
    /// Streams a client may reset before apigate has taken them up (default 20, the
    /// HTTP/2 library's own bound); one more closes the connection with GOAWAY
    /// `ENHANCE_YOUR_CALM`. Applies on restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_pending_reset_streams: Option<u32>,
    /// Control frames a client may send within one second without a request (default
    /// 100): PING, SETTINGS, PRIORITY, empty DATA, and WINDOW_UPDATEs beyond two per
    /// DATA frame apigate sent it. One more closes the connection with GOAWAY
    /// `ENHANCE_YOUR_CALM`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_control_frames_per_second: Option<u32>,
    /// After this long without a byte from a client, apigate sends it a PING (default
    /// `30s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive_interval: Option<Duration>,
    /// A client that sends nothing back within this of a PING is gone: its connection
    /// is closed (default `10s`). A quiet watch on a live client answers the PING.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keepalive_timeout: Option<Duration>,
    /// Interval of PINGs on upstream HTTP/2 connections (default `30s`); a replica that
    /// does not answer one within 5 s has its connection closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ping_interval: Option<Duration>,
    /// Bytes a replica may send on one stream before apigate has passed them on to the
    /// client (default 262144): what a client that stops reading makes apigate hold.
    /// An upstream connection's window is 100 times this, one share per stream it may
    /// carry, so a stalled stream never holds up the others on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_stream_window_bytes: Option<u32>,
}

/// Allowlist settings shared by all routes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessDefaults {
    /// Networks every allowlist includes: the seed's node and pod networks and operator
    /// additions, so the platform itself can always reach every API server.
    #[serde(default, rename = "alwaysAllowedCIDRs", alias = "alwaysAllowedCidrs")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub always_allowed_cidrs: Vec<String>,
    /// Most CIDRs one route's allowlist may hold (default 1000). The limit exists so a
    /// single tenant cannot make every snapshot compile (and every replica's memory)
    /// grow without bound; raise it deliberately.
    #[serde(default, rename = "maxCIDRsPerRoute", alias = "maxCidrsPerRoute")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cidrs_per_route: Option<usize>,
}

/// Settings of CONNECT listeners.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectSpec {
    /// Request header naming the destination (default `X-Gardener-Destination`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_header: Option<String>,
}

/// A listener.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerSpec {
    /// Name used in logs and metrics.
    pub name: String,
    /// `ip:port` to bind, e.g. `0.0.0.0:443` or `[::]:443` (dual-stack on Linux).
    pub address: String,
    /// `tls` (default): the route comes from the TLS SNI. `connect`: HTTP CONNECT with a
    /// destination header, then TLS inside the tunnel (Gardener's port 8443 path).
    #[serde(default)]
    pub kind: ListenerKind,
    /// PROXY protocol (v1 and v2) before anything else on the connection.
    #[serde(default)]
    pub proxy_protocol: ProxyProtocolMode,
    /// Peers allowed to send a PROXY header (CIDRs); a header from anyone else closes
    /// the connection. Required when `proxyProtocol` is not `off`.
    #[serde(default)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
}

/// What a listener speaks first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ListenerKind {
    /// TLS; the ClientHello's SNI selects the route.
    #[default]
    Tls,
    /// Plain HTTP CONNECT naming the route in a header, then TLS inside the tunnel.
    Connect,
}

/// Whether a listener expects a PROXY protocol header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ProxyProtocolMode {
    /// Never: the TCP peer is the client.
    #[default]
    Off,
    /// Use a header when a trusted peer sends one; connections without one keep the TCP peer.
    Optional,
    /// Every connection must start with a header from a trusted peer.
    Required,
}

/// The admin (health and metrics) listener.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminSpec {
    /// `ip:port` to bind; keep it off the public interface.
    pub address: String,
    /// A file holding the bearer token that state-changing admin actions (rollout
    /// resume, abort, promote) require from clients other than loopback ones. Without
    /// it, only loopback clients may take those actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
}

/// How a backend is chosen for each request.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Balancing {
    /// Least outstanding requests, choosing between two random backends (Envoy's
    /// LEAST_REQUEST): close to ideal spread at O(1) cost and no herd behaviour.
    #[default]
    LeastRequest,
    /// Strict rotation: predictable, but blind to slow replicas.
    RoundRobin,
}

/// Defaults shared by all routes. Every field has a production default so that an
/// empty `defaults:` is a working configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Defaults {
    /// Balancing policy for routes that do not set one (default `leastRequest`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balancing: Option<Balancing>,
    /// Upstream TCP + TLS connect timeout (default `5s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// Longest silence allowed while reading an ordinary response (default `60s`,
    /// kube-apiserver's own `--request-timeout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<Duration>,
    /// Longest silence allowed on watches, `exec`/`attach`/`port-forward` and log
    /// follows (default `24h`, like Gardener's route timeout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub long_running_timeout: Option<Duration>,
    /// Upstream connections are not reused after this age, so a rotated front-proxy
    /// certificate takes effect (default `24h`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_max_connection_age: Option<Duration>,
    /// PROXY header, CONNECT request, ClientHello and TLS handshake together must finish
    /// within this (default `10s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake_timeout: Option<Duration>,
    /// Every request head (HTTP/1.1) or header block (HTTP/2 stream) must arrive within
    /// this from its first byte, and the first within this of the handshake (default `10s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_header_timeout: Option<Duration>,
    /// An idle HTTP/1.1 keep-alive or HTTP/2 connection is closed after this (default
    /// `5m`, at least `1s`; HTTP/1.1 counts whole seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// Largest request head a client may send, in bytes: the request line or HTTP/2
    /// pseudo-headers plus every header field (default 65536, at most 1048576, which is
    /// kube-apiserver's own limit). Larger requests get 431 and are never forwarded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_request_header_bytes: Option<u64>,
    /// Passive health checking.
    #[serde(default)]
    pub ejection: EjectionSpec,
    /// Active health checks of every replica (`/readyz`), on by default.
    #[serde(default)]
    pub health: HealthSpec,
    /// How a replica that is new, or back from ejection or unreadiness, ramps up.
    #[serde(default)]
    pub slow_start: SlowStartSpec,
    /// Flow control of every route (off by default); a route's `flowControl` overrides
    /// any field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_control: Option<super::FlowControlSpec>,
}

/// Active health checks. In `GatewayConfig.spec.defaults.health` for every route; an
/// `ApiServerRoute`'s `spec.health` overrides any field and adds the probe's identity.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthSpec {
    /// Probe at all (default `true`). Passthrough routes get TCP connect checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Time between probes of one replica, jittered by up to 10% (default `2s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// A probe without an answer in this time failed (default `1s`, shorter than
    /// `interval`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Passed probes in a row that make an unready replica ready again (default 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<u32>,
    /// Failed probes in a row that make a replica unready (default 3): with the default
    /// interval a replica leaves the rotation within about 6 s, well inside
    /// kube-apiserver's `--shutdown-delay-duration` (Gardener: 15 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<u32>,
    /// Path probed (default `/readyz`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Routes only: a file holding the bearer token the probe presents (kube-apiserver
    /// with anonymous auth off answers `/readyz` only to an authenticated client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// Routes only: probe with the front-proxy certificate as this user
    /// (`X-Remote-User`), instead of a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub front_proxy_user: Option<String>,
}

/// Slow start: a replica's share of new requests ramps up linearly over `window` from
/// `minWeightPercent`, because its caches (the watch cache of a kube-apiserver) are
/// cold. Not applied when every replica of a route is new.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlowStartSpec {
    /// Length of the ramp (default `30s`; `0s` turns slow start off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
    /// Share at the start of the ramp, in percent of a full share (default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_weight_percent: Option<u32>,
}

/// Passive ejection of failing backends.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EjectionSpec {
    /// Consecutive failures that eject a backend (default 5): connect and TLS failures,
    /// broken connections and apigate's own timeouts; never a replica's own answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// First ejection lasts this long; each further one doubles it (default `5s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<Duration>,
    /// Upper bound of the growing ejection time (default `2m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ejection_time: Option<Duration>,
    /// At most this share of a route's replicas is ejected at once (default 10; one
    /// ejection is always allowed), so failures cannot eject a whole route. Replicas a
    /// probe found unready do not count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ejected_percent: Option<u32>,
}
