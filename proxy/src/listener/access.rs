//! Allowlist enforcement at the connection level: decide, count, log (rate-limited).

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use apigate_control::access::{Decision, MatchReason};
use apigate_control::Route;

use super::proxy_header::ClientAddrs;
use crate::state::State;

/// Denial log lines per second before further ones are only counted.
const DENIAL_LOGS_PER_SECOND: u32 = 20;

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

/// Count a connection-level outcome.
pub fn count(state: &State, listener: &str, route: &str, allowed: bool, reason: &str, ip: IpAddr) {
    let result = if allowed { "allowed" } else { "denied" };
    state
        .metrics
        .access
        .with_label_values(&[listener, route, result, reason, family(ip)])
        .inc();
}

/// Check `route`'s allowlist for a connection; counts and logs the outcome.
pub fn check(state: &State, listener: &str, route: &Route, addrs: &ClientAddrs) -> bool {
    let decision = route.access.decide(addrs.direct.ip(), addrs.remote.ip());
    let route_label = route.id.to_string();
    count(
        state,
        listener,
        &route_label,
        decision.allowed(),
        reason_label(&decision),
        addrs.remote.ip(),
    );
    if !decision.allowed() {
        log_denial(listener, &route_label, addrs, &decision);
    }
    decision.allowed()
}

/// Log a denial, at most [`DENIAL_LOGS_PER_SECOND`] per second process-wide, so a flood
/// of denied connections cannot fill the disk; the rest are summarised.
pub fn log_denial(listener: &str, route: &str, addrs: &ClientAddrs, decision: &Decision) {
    if !LIMITER.admit() {
        return;
    }
    let (rule, checked) = match decision.reason {
        MatchReason::Rule {
            index,
            address_type,
        } => (format!("rules[{index}]"), address_type.as_str()),
        MatchReason::Default => ("defaultAction".to_string(), "remote_ip"),
        MatchReason::AlwaysAllowed | MatchReason::NoPolicy => ("-".to_string(), "remote_ip"),
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

/// Log a refusal that has no route decision (bad PROXY header, unknown name), with the
/// same rate limit.
pub fn log_refusal(listener: &str, reason: &str, addrs: &ClientAddrs, detail: &str) {
    if LIMITER.admit() {
        tracing::info!(listener, reason, client = %addrs.remote.ip(), tcp_peer = %addrs.direct.ip(), detail, "connection refused");
    }
}

static LIMITER: RateLimiter = RateLimiter::new();

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
                    "denial log lines suppressed in the last second"
                );
            }
            *start = now;
            *logged = 0;
            *suppressed = 0;
        }
        if *logged < DENIAL_LOGS_PER_SECOND {
            *logged += 1;
            true
        } else {
            *suppressed += 1;
            false
        }
    }
}
