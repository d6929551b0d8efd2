//! Compile a `GatewayConfig` into [`GatewaySettings`] with defaults applied.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use crate::access::compile_cidrs;
use crate::error::{Errors, Problem};
use crate::model::{Balancing, GatewayConfig, ProxyProtocolMode};
use crate::snapshot::{Ejection, GatewaySettings, Listener, Timeouts};

/// Default `access.maxCIDRsPerRoute`.
pub const DEFAULT_MAX_CIDRS_PER_ROUTE: usize = 1000;
/// Default CONNECT destination header (Gardener's).
pub const DEFAULT_DESTINATION_HEADER: &str = "X-Gardener-Destination";

/// A compiled `GatewayConfig` plus the defaults routes are compiled with.
pub(super) struct CompiledGateway {
    pub(super) settings: GatewaySettings,
    pub(super) balancing: Balancing,
    pub(super) always_allowed: Vec<ipnet::IpNet>,
    pub(super) max_cidrs: usize,
}

const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);

/// Compile the gateway settings, or record errors and return `None`.
pub(super) fn compile(object: &GatewayConfig, errors: &mut Errors) -> Option<CompiledGateway> {
    let object_ref = object.object_ref();
    let before = errors.len();
    let spec = &object.spec;

    if spec.listeners.is_empty() {
        errors.push(
            &object_ref,
            "spec.listeners",
            Problem::Missing("at least one listener"),
        );
    }
    let mut listeners = Vec::new();
    let mut names = HashSet::new();
    let mut addresses = HashSet::new();
    for (i, listener) in spec.listeners.iter().enumerate() {
        let field = format!("spec.listeners[{i}]");
        if listener.name.is_empty() {
            errors.push(
                &object_ref,
                format!("{field}.name"),
                Problem::Missing("a name"),
            );
        } else if !names.insert(listener.name.clone()) {
            errors.push(
                &object_ref,
                format!("{field}.name"),
                Problem::Conflict {
                    value: listener.name.clone(),
                    other: "another listener of this GatewayConfig".into(),
                },
            );
        }
        let trusted = compile_cidrs(
            &listener.trusted_proxies,
            &object_ref,
            &format!("{field}.trustedProxies"),
            errors,
        )
        .unwrap_or_default();
        if listener.proxy_protocol != ProxyProtocolMode::Off && listener.trusted_proxies.is_empty()
        {
            errors.push(
                &object_ref,
                format!("{field}.trustedProxies"),
                Problem::Missing(
                    "the CIDRs of the load balancers allowed to send PROXY headers when proxyProtocol is optional or required",
                ),
            );
        }
        match parse_address(&listener.address) {
            // Port 0 (the OS picks) never conflicts.
            Ok(address) if address.port() == 0 || addresses.insert(address) => {
                listeners.push(Listener {
                    name: listener.name.clone(),
                    address,
                    kind: listener.kind,
                    proxy_protocol: listener.proxy_protocol,
                    trusted_proxies: listener.trusted_proxies.clone(),
                    trusted,
                })
            }
            Ok(_) => errors.push(
                &object_ref,
                format!("{field}.address"),
                Problem::Conflict {
                    value: listener.address.clone(),
                    other: "another listener of this GatewayConfig".into(),
                },
            ),
            Err(problem) => errors.push(&object_ref, format!("{field}.address"), problem),
        }
    }
    let admin = match &spec.admin {
        None => None,
        Some(admin) => match parse_address(&admin.address) {
            Ok(a) => Some(a),
            Err(problem) => {
                errors.push(&object_ref, "spec.admin.address", problem);
                None
            }
        },
    };

    let d = &spec.defaults;
    let pick = |v: Option<crate::model::Duration>, default: Duration| v.map_or(default, |d| d.0);
    let timeouts = Timeouts {
        connect: pick(d.connect_timeout, 5 * SECOND),
        request: pick(d.request_timeout, 60 * SECOND),
        long_running: pick(d.long_running_timeout, 24 * HOUR),
        upstream_max_connection_age: pick(d.upstream_max_connection_age, 24 * HOUR),
        handshake: pick(d.handshake_timeout, 10 * SECOND),
        request_header: pick(d.request_header_timeout, 10 * SECOND),
        idle: pick(d.idle_timeout, 300 * SECOND),
    };
    for (field, value) in [
        ("connectTimeout", timeouts.connect),
        ("requestTimeout", timeouts.request),
        ("longRunningTimeout", timeouts.long_running),
        (
            "upstreamMaxConnectionAge",
            timeouts.upstream_max_connection_age,
        ),
        ("handshakeTimeout", timeouts.handshake),
        ("requestHeaderTimeout", timeouts.request_header),
        ("idleTimeout", timeouts.idle),
    ] {
        if value.is_zero() {
            errors.push(
                &object_ref,
                format!("spec.defaults.{field}"),
                Problem::Invalid {
                    value: "0s".into(),
                    reason: "must be greater than zero".into(),
                },
            );
        }
    }
    if timeouts.long_running < timeouts.request {
        errors.push(
            &object_ref,
            "spec.defaults.longRunningTimeout",
            Problem::Invalid {
                value: humantime::format_duration(timeouts.long_running).to_string(),
                reason: "must not be shorter than requestTimeout".into(),
            },
        );
    }
    let ejection = Ejection {
        consecutive_failures: d.ejection.consecutive_failures.unwrap_or(5),
        base: pick(d.ejection.base_ejection_time, 5 * SECOND),
        max: pick(d.ejection.max_ejection_time, 120 * SECOND),
    };
    if ejection.consecutive_failures == 0 {
        errors.push(
            &object_ref,
            "spec.defaults.ejection.consecutiveFailures",
            Problem::Invalid {
                value: "0".into(),
                reason: "must be at least 1".into(),
            },
        );
    }
    if ejection.max < ejection.base {
        errors.push(
            &object_ref,
            "spec.defaults.ejection.maxEjectionTime",
            Problem::Invalid {
                value: humantime::format_duration(ejection.max).to_string(),
                reason: "must not be shorter than baseEjectionTime".into(),
            },
        );
    }

    let access = &spec.access;
    compile_cidrs(
        &access.always_allowed_cidrs,
        &object_ref,
        "spec.access.alwaysAllowedCIDRs",
        errors,
    );
    // Validated just above; parse again to keep the list for the routes' policies.
    let always_allowed: Vec<ipnet::IpNet> = access
        .always_allowed_cidrs
        .iter()
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let max_cidrs = access
        .max_cidrs_per_route
        .unwrap_or(DEFAULT_MAX_CIDRS_PER_ROUTE);
    if max_cidrs == 0 {
        errors.push(
            &object_ref,
            "spec.access.maxCIDRsPerRoute",
            Problem::Invalid {
                value: "0".into(),
                reason: "must be at least 1".into(),
            },
        );
    }
    let header = spec
        .connect
        .destination_header
        .clone()
        .unwrap_or_else(|| DEFAULT_DESTINATION_HEADER.to_string());
    if http_header_name_invalid(&header) {
        errors.push(
            &object_ref,
            "spec.connect.destinationHeader",
            Problem::Invalid {
                value: header.clone(),
                reason: "not a valid HTTP header name".into(),
            },
        );
    }

    if errors.len() != before {
        return None;
    }
    Some(CompiledGateway {
        settings: GatewaySettings {
            listeners,
            destination_header: header.to_ascii_lowercase(),
            admin,
            timeouts,
            ejection,
        },
        balancing: d.balancing.unwrap_or_default(),
        always_allowed,
        max_cidrs,
    })
}

/// RFC 9110 token characters only.
fn http_header_name_invalid(name: &str) -> bool {
    name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parse `ip:port` (IPv6 in brackets). Host names are rejected: a listener or backend
/// must not depend on DNS at compile time.
pub(super) fn parse_address(text: &str) -> Result<SocketAddr, Problem> {
    text.trim().parse().map_err(|_| Problem::Invalid {
        value: text.to_string(),
        reason: "expected ip:port, e.g. 10.0.0.1:443 or [2001:db8::1]:443".into(),
    })
}
