//! Compile a `GatewayConfig` into [`GatewaySettings`] with defaults applied.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use super::setting::{count_in, setting, DurationSetting, DAY, HOUR, MILLISECOND, SECOND};
use crate::access::compile_cidrs;
use crate::error::{Errors, Problem};
use crate::inputs::Files;
use crate::model::Defaults;
use crate::model::{Balancing, ConnectionsSpec, GatewayConfig, Http2Spec, ProxyProtocolMode};
use crate::snapshot::{
    AdminToken, ConnectionSettings, Ejection, GatewaySettings, Http2Settings, Listener,
    RouteSettings, SlowStart, Timeouts,
};

/// Default `access.maxCIDRsPerRoute`.
pub const DEFAULT_MAX_CIDRS_PER_ROUTE: usize = 1000;
/// Default CONNECT destination header (Gardener's).
pub const DEFAULT_DESTINATION_HEADER: &str = "X-Gardener-Destination";

/// A compiled `GatewayConfig` plus the defaults routes are compiled with.
pub(super) struct CompiledGateway {
    pub(super) settings: GatewaySettings,
    pub(super) health: super::health::HealthDefaults,
    pub(super) balancing: Balancing,
    pub(super) always_allowed: Vec<ipnet::IpNet>,
    pub(super) max_cidrs: usize,
    /// `defaults.flowControl` as written (checked): routes merge their own over it.
    pub(super) flow_control: Option<crate::model::FlowControlSpec>,
}

/// Default and bounds of `defaults.maxRequestHeaderBytes`. The upper bound is
/// kube-apiserver's own (Go's `http.DefaultMaxHeaderBytes`): a larger head could only be
/// refused by the replica, on a connection apigate shares with other clients.
pub const DEFAULT_MAX_REQUEST_HEADER_BYTES: usize = 64 * 1024;
const MIN_REQUEST_HEADER_BYTES: u64 = 1024;
const MAX_REQUEST_HEADER_BYTES: u64 = 1024 * 1024;

const MINUTES_10: Duration = Duration::from_secs(10 * 60);
const DAYS_30: Duration = Duration::from_secs(30 * 24 * 3600);

const CONNECT: DurationSetting = setting(
    "connectTimeout",
    Duration::from_secs(5),
    MILLISECOND,
    MINUTES_10,
);
const REQUEST: DurationSetting =
    setting("requestTimeout", Duration::from_secs(60), MILLISECOND, DAY);
const LONG_RUNNING: DurationSetting = setting("longRunningTimeout", DAY, MILLISECOND, DAYS_30);
const MAX_CONNECTION_AGE: DurationSetting =
    setting("upstreamMaxConnectionAge", DAY, SECOND, DAYS_30);
const HANDSHAKE: DurationSetting = setting(
    "handshakeTimeout",
    Duration::from_secs(10),
    MILLISECOND,
    MINUTES_10,
);
const REQUEST_HEADER: DurationSetting = setting(
    "requestHeaderTimeout",
    Duration::from_secs(10),
    MILLISECOND,
    MINUTES_10,
);
const IDLE: DurationSetting = setting("idleTimeout", Duration::from_secs(300), SECOND, DAY);
const BASE_EJECTION: DurationSetting = setting(
    "ejection.baseEjectionTime",
    Duration::from_secs(5),
    MILLISECOND,
    HOUR,
);
const MAX_EJECTION: DurationSetting = setting(
    "ejection.maxEjectionTime",
    Duration::from_secs(120),
    MILLISECOND,
    DAY,
);

const KEEPALIVE_INTERVAL: DurationSetting = setting(
    "keepaliveInterval",
    Duration::from_secs(30),
    Duration::from_millis(100),
    HOUR,
);
const KEEPALIVE_TIMEOUT: DurationSetting = setting(
    "keepaliveTimeout",
    Duration::from_secs(10),
    Duration::from_millis(100),
    Duration::from_secs(300),
);
const UPSTREAM_PING_INTERVAL: DurationSetting = setting(
    "upstreamPingInterval",
    Duration::from_secs(30),
    SECOND,
    HOUR,
);

// The kernel counts these in whole seconds.
const TCP_KEEPALIVE_IDLE: DurationSetting =
    setting("tcpKeepaliveIdle", Duration::from_secs(60), SECOND, DAY);
const TCP_KEEPALIVE_INTERVAL: DurationSetting = setting(
    "tcpKeepaliveInterval",
    Duration::from_secs(10),
    SECOND,
    HOUR,
);

const SLOW_START_WINDOW: DurationSetting = setting(
    "slowStart.window",
    Duration::from_secs(30),
    Duration::ZERO,
    HOUR,
);

/// A percentage already checked to be at most 100.
fn percent(value: u32) -> u8 {
    u8::try_from(value.min(100)).unwrap_or(100)
}

/// The largest HTTP/2 flow-control window (RFC 9113 §6.9.1).
const MAX_WINDOW: u32 = (1 << 31) - 1;

/// Resolve `spec.http2`: Gardener's Envoy settings by default.
fn compile_http2(
    spec: &Http2Spec,
    object_ref: &crate::error::ObjectRef,
    errors: &mut Errors,
) -> Http2Settings {
    let settings = Http2Settings {
        max_concurrent_streams: count_in(
            spec.max_concurrent_streams,
            100,
            1..=10_000,
            "spec.http2.maxConcurrentStreams",
            object_ref,
            errors,
        ),
        initial_stream_window: count_in(
            spec.initial_stream_window_bytes,
            64 * 1024,
            16 * 1024..=MAX_WINDOW,
            "spec.http2.initialStreamWindowBytes",
            object_ref,
            errors,
        ),
        initial_connection_window: count_in(
            spec.initial_connection_window_bytes,
            1024 * 1024,
            65_535..=MAX_WINDOW,
            "spec.http2.initialConnectionWindowBytes",
            object_ref,
            errors,
        ),
        max_resets_per_second: count_in(
            spec.max_resets_per_second,
            100,
            1..=100_000,
            "spec.http2.maxResetsPerSecond",
            object_ref,
            errors,
        ),
        max_pending_reset_streams: count_in(
            spec.max_pending_reset_streams,
            20,
            1..=10_000,
            "spec.http2.maxPendingResetStreams",
            object_ref,
            errors,
        ),
        max_control_frames_per_second: count_in(
            spec.max_control_frames_per_second,
            100,
            1..=100_000,
            "spec.http2.maxControlFramesPerSecond",
            object_ref,
            errors,
        ),
        keepalive_interval: KEEPALIVE_INTERVAL.resolve_at(
            "spec.http2",
            spec.keepalive_interval,
            KEEPALIVE_INTERVAL.default(),
            object_ref,
            errors,
        ),
        keepalive_timeout: KEEPALIVE_TIMEOUT.resolve_at(
            "spec.http2",
            spec.keepalive_timeout,
            KEEPALIVE_TIMEOUT.default(),
            object_ref,
            errors,
        ),
        upstream_ping_interval: UPSTREAM_PING_INTERVAL.resolve_at(
            "spec.http2",
            spec.upstream_ping_interval,
            UPSTREAM_PING_INTERVAL.default(),
            object_ref,
            errors,
        ),
        // At most MAX_WINDOW / 100: the connection's window is 100 times this.
        upstream_stream_window: count_in(
            spec.upstream_stream_window_bytes,
            256 * 1024,
            16 * 1024..=16 * 1024 * 1024,
            "spec.http2.upstreamStreamWindowBytes",
            object_ref,
            errors,
        ),
    };
    if settings.initial_connection_window < settings.initial_stream_window {
        errors.push(
            object_ref,
            "spec.http2.initialConnectionWindowBytes",
            Problem::Invalid {
                value: settings.initial_connection_window.to_string(),
                reason: "must not be smaller than initialStreamWindowBytes".into(),
            },
        );
    }
    settings
}

/// Resolve `spec.connections`: the caps, each at most the one above it, and the TCP
/// keepalive.
fn compile_connections(
    spec: &ConnectionsSpec,
    object_ref: &crate::error::ObjectRef,
    errors: &mut Errors,
) -> ConnectionSettings {
    const MAX: u32 = 10_000_000;
    let max = count_in(
        spec.max,
        100_000,
        1..=MAX,
        "spec.connections.max",
        object_ref,
        errors,
    );
    let per_route = count_in(
        spec.max_per_route,
        10_000.min(max),
        1..=max,
        "spec.connections.maxPerRoute",
        object_ref,
        errors,
    );
    let per_source = count_in(
        spec.max_per_source,
        0,
        0..=per_route,
        "spec.connections.maxPerSource",
        object_ref,
        errors,
    );
    let size = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
    ConnectionSettings {
        max: size(max),
        per_route: size(per_route),
        per_source: (per_source > 0).then(|| size(per_source)),
        keepalive_idle: TCP_KEEPALIVE_IDLE.resolve_at(
            "spec.connections",
            spec.tcp_keepalive_idle,
            TCP_KEEPALIVE_IDLE.default(),
            object_ref,
            errors,
        ),
        keepalive_interval: TCP_KEEPALIVE_INTERVAL.resolve_at(
            "spec.connections",
            spec.tcp_keepalive_interval,
            TCP_KEEPALIVE_INTERVAL.default(),
            object_ref,
            errors,
        ),
        keepalive_probes: count_in(
            spec.tcp_keepalive_probes,
            6,
            1..=100,
            "spec.connections.tcpKeepaliveProbes",
            object_ref,
            errors,
        ),
    }
}

/// Resolve `spec.defaults` into the settings every route gets, and the handshake
/// timeout (which applies before a route is known).
fn compile_defaults(
    d: &Defaults,
    object_ref: &crate::error::ObjectRef,
    errors: &mut Errors,
) -> (RouteSettings, Duration) {
    let timeouts = Timeouts {
        connect: CONNECT.resolve(d.connect_timeout, object_ref, errors),
        request: REQUEST.resolve(d.request_timeout, object_ref, errors),
        long_running: LONG_RUNNING.resolve(d.long_running_timeout, object_ref, errors),
        upstream_max_connection_age: MAX_CONNECTION_AGE.resolve(
            d.upstream_max_connection_age,
            object_ref,
            errors,
        ),
        request_header: REQUEST_HEADER.resolve(d.request_header_timeout, object_ref, errors),
        idle: IDLE.resolve(d.idle_timeout, object_ref, errors),
    };
    let handshake = HANDSHAKE.resolve(d.handshake_timeout, object_ref, errors);
    if timeouts.long_running < timeouts.request {
        errors.push(
            object_ref,
            "spec.defaults.longRunningTimeout",
            Problem::Invalid {
                value: humantime::format_duration(timeouts.long_running).to_string(),
                reason: "must not be shorter than requestTimeout".into(),
            },
        );
    }
    let ejection = Ejection {
        consecutive_failures: d.ejection.consecutive_failures.unwrap_or(5),
        base: BASE_EJECTION.resolve(d.ejection.base_ejection_time, object_ref, errors),
        max: MAX_EJECTION.resolve(d.ejection.max_ejection_time, object_ref, errors),
        max_ejected_percent: percent(count_in(
            d.ejection.max_ejected_percent,
            10,
            0..=100,
            "spec.defaults.ejection.maxEjectedPercent",
            object_ref,
            errors,
        )),
    };
    let slow_start = SlowStart {
        window: SLOW_START_WINDOW.resolve(d.slow_start.window, object_ref, errors),
        min_weight_percent: percent(count_in(
            d.slow_start.min_weight_percent,
            10,
            1..=100,
            "spec.defaults.slowStart.minWeightPercent",
            object_ref,
            errors,
        )),
    };
    if slow_start.window.is_zero() && d.slow_start.min_weight_percent.is_some() {
        errors.push(
            object_ref,
            "spec.defaults.slowStart.minWeightPercent",
            Problem::Invalid {
                value: slow_start.min_weight_percent.to_string(),
                reason: "has no effect with slowStart.window 0s (slow start off); remove it or set a window".into(),
            },
        );
    }
    if ejection.consecutive_failures == 0 {
        errors.push(
            object_ref,
            "spec.defaults.ejection.consecutiveFailures",
            Problem::Invalid {
                value: "0".into(),
                reason: "must be at least 1".into(),
            },
        );
    }
    if ejection.max < ejection.base {
        errors.push(
            object_ref,
            "spec.defaults.ejection.maxEjectionTime",
            Problem::Invalid {
                value: humantime::format_duration(ejection.max).to_string(),
                reason: "must not be shorter than baseEjectionTime".into(),
            },
        );
    }
    let max_request_header_bytes = match d.max_request_header_bytes {
        None => DEFAULT_MAX_REQUEST_HEADER_BYTES,
        Some(bytes) if (MIN_REQUEST_HEADER_BYTES..=MAX_REQUEST_HEADER_BYTES).contains(&bytes) => {
            usize::try_from(bytes).unwrap_or(DEFAULT_MAX_REQUEST_HEADER_BYTES)
        }
        Some(bytes) => {
            errors.push(
                object_ref,
                "spec.defaults.maxRequestHeaderBytes",
                Problem::Invalid {
                    value: bytes.to_string(),
                    reason: format!(
                        "must be between {MIN_REQUEST_HEADER_BYTES} and {MAX_REQUEST_HEADER_BYTES} (kube-apiserver's own limit)"
                    ),
                },
            );
            DEFAULT_MAX_REQUEST_HEADER_BYTES
        }
    };
    (
        RouteSettings {
            timeouts,
            ejection,
            max_request_header_bytes,
            slow_start,
        },
        handshake,
    )
}

/// Compile the gateway settings, or record errors and return `None`.
pub(super) fn compile(
    object: &GatewayConfig,
    files: &Files,
    errors: &mut Errors,
) -> Option<CompiledGateway> {
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
    let admin_token = spec
        .admin
        .as_ref()
        .and_then(|a| a.token_file.as_ref())
        .and_then(|path| admin_token(path, files, &object_ref, errors));

    let (defaults, handshake_timeout) = compile_defaults(&spec.defaults, &object_ref, errors);

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

    let health = super::health::compile_defaults(&spec.defaults.health, &object_ref, errors);
    let rollout = super::rollout::compile(spec.rollout.as_ref(), &object_ref, errors);
    let http2 = compile_http2(&spec.http2, &object_ref, errors);
    let connections = compile_connections(&spec.connections, &object_ref, errors);
    let access_log = super::access_log::compile(&spec.access_log, &object_ref, errors);
    super::flow::compile(
        spec.defaults.flow_control.as_ref(),
        "spec.defaults.flowControl",
        &object_ref,
        errors,
    );
    if errors.len() != before {
        return None;
    }
    Some(CompiledGateway {
        health,
        settings: GatewaySettings {
            listeners,
            destination_header: header.to_ascii_lowercase(),
            admin,
            admin_token,
            handshake_timeout,
            defaults,
            rollout,
            http2,
            connections,
            access_log,
        },
        balancing: spec.defaults.balancing.unwrap_or_default(),
        always_allowed,
        max_cidrs,
        flow_control: spec.defaults.flow_control.clone(),
    })
}

/// The admin token from its file: trimmed, not empty, printable.
fn admin_token(
    path: &str,
    files: &Files,
    object_ref: &crate::error::ObjectRef,
    errors: &mut Errors,
) -> Option<AdminToken> {
    const FIELD: &str = "spec.admin.tokenFile";
    match files.get(path) {
        Some(Ok(bytes)) => match std::str::from_utf8(bytes).map(str::trim) {
            Ok(token) if token.len() >= 16 && token.bytes().all(|b| b.is_ascii_graphic()) => {
                Some(AdminToken(token.into()))
            }
            _ => {
                errors.push(
                    object_ref,
                    FIELD,
                    Problem::Invalid {
                        value: path.to_string(),
                        reason: "must hold one token of at least 16 printable ASCII characters"
                            .into(),
                    },
                );
                None
            }
        },
        Some(Err(reason)) => {
            errors.push(
                object_ref,
                FIELD,
                Problem::Unreadable {
                    path: path.to_string(),
                    reason: reason.clone(),
                },
            );
            None
        }
        None => {
            errors.push(
                object_ref,
                FIELD,
                Problem::Missing("the token file's contents"),
            );
            None
        }
    }
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
