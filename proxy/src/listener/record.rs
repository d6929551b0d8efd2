//! The one place admission outcomes are counted and logged.
//!
//! Every stage of the pipeline ends a refused connection with one [`Refused`] value;
//! [`refused`] turns it into the connection, access and TLS metrics (with the route
//! wherever it was already known) and a rate-limited log line. [`admitted`] records the
//! allowlist's positive decisions the same way.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use apigate_control::access::{Decision, MatchReason};

use super::connect::ConnectError;
use super::proxy_header::{ClientAddrs, ProxyHeaderError};
use crate::state::State;

/// Log lines per second about refused connections before further ones are only counted.
const REFUSAL_LOGS_PER_SECOND: u32 = 20;

/// Why a connection was refused, whatever stage refused it.
#[derive(Debug)]
pub enum Refusal {
    /// A PROXY header from an untrusted peer, or a malformed or missing one.
    ProxyHeader(ProxyHeaderError),
    /// A CONNECT request that is malformed or names no route.
    Connect(ConnectError),
    /// Not TLS, or a malformed ClientHello.
    NotTls(String),
    /// The ClientHello did not arrive before the admission deadline.
    HelloTimeout,
    /// The client closed (or the socket failed) before its ClientHello.
    ClosedEarly(String),
    /// A ClientHello without SNI on a listener that routes by SNI.
    NoSni,
    /// An SNI no route serves.
    UnknownSni(String),
    /// The route's allowlist denies the client.
    Denied(Decision),
    /// A configuration installed while the connection was being admitted no longer
    /// allows it (`route_removed` or `acl_revoked`).
    Revoked(&'static str),
    /// The TLS handshake failed (reason label) or timed out (`timeout`).
    Handshake(&'static str),
    /// A connection cap (`spec.connections`) was reached.
    OverLimit(Limit),
}

/// Which connection cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `connections.max`: all connections together.
    Total,
    /// `connections.maxPerRoute`.
    Route,
    /// `connections.maxPerSource`.
    Source,
}

impl Refusal {
    /// `apigate_connections_total` result.
    pub fn result(&self) -> &'static str {
        match self {
            Refusal::ProxyHeader(_) => "bad_proxy_header",
            Refusal::Connect(e) => e.reason(),
            Refusal::NotTls(_) => "not_tls",
            Refusal::HelloTimeout | Refusal::Handshake("timeout") => "handshake_timeout",
            Refusal::ClosedEarly(_) => "closed_early",
            Refusal::NoSni => "no_sni",
            Refusal::UnknownSni(_) => "unknown_sni",
            Refusal::Denied(_) => "denied",
            Refusal::Revoked(_) => "revoked",
            Refusal::Handshake(_) => "handshake_failed",
            Refusal::OverLimit(Limit::Total) => "limit_total",
            Refusal::OverLimit(Limit::Route) => "limit_route",
            Refusal::OverLimit(Limit::Source) => "limit_source",
        }
    }

    /// `apigate_access_total` reason, for refusals that are access decisions.
    fn access_reason(&self) -> Option<&'static str> {
        match self {
            Refusal::ProxyHeader(e) => Some(e.reason()),
            Refusal::Connect(e) => Some(e.reason()),
            Refusal::NoSni => Some("no_sni"),
            Refusal::UnknownSni(_) => Some("unknown_sni"),
            Refusal::Denied(decision) => Some(reason_label(decision)),
            _ => None,
        }
    }

    /// `apigate_tls_handshake_failures_total` reason, for handshake failures.
    fn handshake_reason(&self) -> Option<&'static str> {
        match self {
            Refusal::HelloTimeout => Some("timeout"),
            Refusal::Handshake(reason) => Some(reason),
            _ => None,
        }
    }
}

/// A refused connection with what was known about it when it was refused.
#[derive(Debug)]
pub struct Refused {
    /// Why.
    pub refusal: Refusal,
    /// The listener it came in on.
    pub listener: Arc<str>,
    /// Its addresses (the TCP peer twice before a PROXY header was read).
    pub addrs: ClientAddrs,
    /// The route, once it was known.
    pub route: Option<Arc<str>>,
}

/// `ipv4` or `ipv6`, after unmapping IPv4-mapped IPv6 addresses.
pub fn family(ip: IpAddr) -> &'static str {
    match ip.to_canonical() {
        IpAddr::V4(_) => "ipv4",
        IpAddr::V6(_) => "ipv6",
    }
}

fn reason_label(decision: &Decision) -> &'static str {
    match decision.reason {
        MatchReason::AlwaysAllowed => "always_allowed",
        MatchReason::Rule { .. } => "acl",
        MatchReason::Default => "acl_default",
        MatchReason::NoPolicy => "no_policy",
    }
}

/// Count and log a refused connection.
pub fn refused(state: &State, refused: &Refused) {
    let metrics = &state.metrics;
    let listener = &*refused.listener;
    let route = refused.route.as_deref().unwrap_or("none");
    let refusal = &refused.refusal;
    metrics
        .connections
        .with_label_values(&[listener, refusal.result()])
        .inc();
    if let Some(reason) = refusal.access_reason() {
        metrics
            .access
            .with_label_values(&[
                listener,
                route,
                "denied",
                reason,
                family(refused.addrs.remote.ip()),
            ])
            .inc();
    }
    if let Some(reason) = refusal.handshake_reason() {
        metrics
            .tls_handshake_failures
            .with_label_values(&[listener, route, reason])
            .inc();
    }
    if let Refusal::Revoked(reason) = refusal {
        metrics.revoked.with_label_values(&[listener, reason]).inc();
    }
    log(refused, route);
}

/// Count an allowlist decision that let a connection in.
pub fn admitted(
    state: &State,
    listener: &str,
    route: &str,
    decision: &Decision,
    addrs: &ClientAddrs,
) {
    state
        .metrics
        .access
        .with_label_values(&[
            listener,
            route,
            "allowed",
            reason_label(decision),
            family(addrs.remote.ip()),
        ])
        .inc();
}

/// Count a connection handed on (to the HTTP engine or a passthrough splice).
pub fn accepted(state: &State, listener: &str) {
    state
        .metrics
        .connections
        .with_label_values(&[listener, "accepted"])
        .inc();
}

fn log(refused: &Refused, route: &str) {
    let addrs = &refused.addrs;
    let listener = &*refused.listener;
    let reason = refused.refusal.result();
    match &refused.refusal {
        // Scanners and broken clients: not worth a line each.
        Refusal::NotTls(detail) | Refusal::ClosedEarly(detail) => {
            tracing::debug!(listener, client = %addrs.remote.ip(), reason, detail = %detail, "connection refused");
        }
        Refusal::HelloTimeout | Refusal::Handshake(_) => {
            tracing::debug!(listener, route, client = %addrs.remote.ip(), reason, "TLS handshake failed");
        }
        Refusal::Denied(decision) => {
            if !LIMITER.admit() {
                return;
            }
            let (rule, checked) = match decision.reason {
                MatchReason::Rule {
                    index,
                    address_type,
                } => (format!("rules[{index}]"), address_type.as_str()),
                MatchReason::Default => ("defaultAction".to_string(), "remote_ip"),
                MatchReason::AlwaysAllowed | MatchReason::NoPolicy => {
                    ("-".to_string(), "remote_ip")
                }
            };
            tracing::warn!(
                listener,
                route,
                client = %addrs.remote.ip(),
                tcp_peer = %addrs.direct.ip(),
                checked_address = checked,
                rule = %rule,
                "connection denied by allowlist"
            );
        }
        other => {
            if !LIMITER.admit() {
                return;
            }
            let detail = match other {
                Refusal::ProxyHeader(e) => e.to_string(),
                Refusal::Connect(e) => e.to_string(),
                Refusal::UnknownSni(sni) => sni.clone(),
                _ => String::new(),
            };
            tracing::info!(listener, route, reason, client = %addrs.remote.ip(), tcp_peer = %addrs.direct.ip(), detail, "connection refused");
        }
    }
}

static LIMITER: RateLimiter = RateLimiter::new();

/// At most [`REFUSAL_LOGS_PER_SECOND`] lines per second process-wide, so a flood of
/// refused connections cannot fill the disk; the rest are summarised.
struct RateLimiter {
    window: Mutex<Option<(Instant, u32, u64)>>,
}

impl RateLimiter {
    const fn new() -> Self {
        RateLimiter {
            window: Mutex::new(None),
        }
    }

    /// Whether one more line may be logged now.
    fn admit(&self) -> bool {
        let Ok(mut window) = self.window.lock() else {
            return false;
        };
        let now = Instant::now();
        let (start, logged, suppressed) = window.get_or_insert((now, 0, 0));
        if now.duration_since(*start) >= Duration::from_secs(1) {
            if *suppressed > 0 {
                tracing::warn!(
                    suppressed = *suppressed,
                    "refusal log lines suppressed in the last second"
                );
            }
            *start = now;
            *logged = 0;
            *suppressed = 0;
        }
        if *logged < REFUSAL_LOGS_PER_SECOND {
            *logged += 1;
            true
        } else {
            *suppressed += 1;
            false
        }
    }
}
