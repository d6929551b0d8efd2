//! Compile active health checks: the gateway's defaults, then each route's overrides
//! and the identity its probes present.

use std::time::Duration;

use super::setting::{count_in, setting, DurationSetting, HOUR, MILLISECOND};
use crate::error::{Errors, ObjectRef, Problem};
use crate::inputs::Files;
use crate::model::HealthSpec;
use crate::snapshot::{HealthCheck, ProbeCredentials};

const INTERVAL: DurationSetting = setting(
    "interval",
    Duration::from_secs(2),
    Duration::from_millis(100),
    HOUR,
);
const TIMEOUT: DurationSetting = setting(
    "timeout",
    Duration::from_secs(1),
    MILLISECOND,
    Duration::from_secs(60),
);
const DEFAULT_PATH: &str = "/readyz";

/// The gateway's health-check defaults, applied to routes that do not override them.
#[derive(Debug, Clone)]
pub(super) struct HealthDefaults {
    enabled: bool,
    interval: Duration,
    timeout: Duration,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
    path: String,
}

/// The settings both levels share, resolved against `base` (built-in defaults for the
/// gateway, the gateway's for a route), with `prefix` naming the fields.
fn resolve(
    spec: &HealthSpec,
    base: &HealthDefaults,
    prefix: &str,
    object_ref: &ObjectRef,
    errors: &mut Errors,
) -> HealthDefaults {
    let interval = INTERVAL.resolve_at(prefix, spec.interval, base.interval, object_ref, errors);
    let timeout = TIMEOUT.resolve_at(prefix, spec.timeout, base.timeout, object_ref, errors);
    if timeout >= interval {
        errors.push(
            object_ref,
            format!("{prefix}.timeout"),
            Problem::Invalid {
                value: humantime::format_duration(timeout).to_string(),
                reason: format!(
                    "must be shorter than the interval ({}): a probe must end before the next starts",
                    humantime::format_duration(interval)
                ),
            },
        );
    }
    let threshold = |value, default, name: &str, errors: &mut Errors| {
        count_in(
            value,
            default,
            1..=100,
            &format!("{prefix}.{name}"),
            object_ref,
            errors,
        )
    };
    let healthy_threshold = threshold(
        spec.healthy_threshold,
        base.healthy_threshold,
        "healthyThreshold",
        errors,
    );
    let unhealthy_threshold = threshold(
        spec.unhealthy_threshold,
        base.unhealthy_threshold,
        "unhealthyThreshold",
        errors,
    );
    let path = match &spec.path {
        None => base.path.clone(),
        Some(path) if path.starts_with('/') && http_path(path) => path.clone(),
        Some(path) => {
            errors.push(
                object_ref,
                format!("{prefix}.path"),
                Problem::Invalid {
                    value: path.clone(),
                    reason: "an absolute path without spaces, e.g. /readyz".into(),
                },
            );
            base.path.clone()
        }
    };
    HealthDefaults {
        enabled: spec.enabled.unwrap_or(base.enabled),
        interval,
        timeout,
        healthy_threshold,
        unhealthy_threshold,
        path,
    }
}

/// Text an HTTP header value can carry as is (visible ASCII and spaces).
fn header_value(text: &str) -> bool {
    text.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

fn http_path(path: &str) -> bool {
    path.bytes().all(|b| b.is_ascii_graphic())
}

/// `spec.defaults.health` of the `GatewayConfig`.
pub(super) fn compile_defaults(
    spec: &HealthSpec,
    object_ref: &ObjectRef,
    errors: &mut Errors,
) -> HealthDefaults {
    let builtin = HealthDefaults {
        enabled: true,
        interval: Duration::from_secs(2),
        timeout: Duration::from_secs(1),
        healthy_threshold: 2,
        unhealthy_threshold: 3,
        path: DEFAULT_PATH.into(),
    };
    for (field, set) in [
        ("tokenFile", spec.token_file.is_some()),
        ("frontProxyUser", spec.front_proxy_user.is_some()),
    ] {
        if set {
            errors.push(
                object_ref,
                format!("spec.defaults.health.{field}"),
                Problem::Invalid {
                    value: "set".into(),
                    reason: "a probe identity belongs to one API server: set it in the ApiServerRoute's spec.health".into(),
                },
            );
        }
    }
    resolve(spec, &builtin, "spec.defaults.health", object_ref, errors)
}

/// What the route is, for its probe.
pub(super) struct RouteKind {
    /// Passthrough: TCP connect checks only, no identity.
    pub(super) passthrough: bool,
    /// The route has a front-proxy certificate.
    pub(super) front_proxy: bool,
}

/// A route's health check, or `None` when probing is off for it.
pub(super) fn compile_route(
    spec: Option<&HealthSpec>,
    defaults: &HealthDefaults,
    kind: RouteKind,
    files: &Files,
    object_ref: &ObjectRef,
    errors: &mut Errors,
) -> Option<HealthCheck> {
    let empty = HealthSpec::default();
    let spec = spec.unwrap_or(&empty);
    let resolved = resolve(spec, defaults, "spec.health", object_ref, errors);
    let credentials = match (&spec.token_file, &spec.front_proxy_user) {
        (Some(_), Some(_)) => {
            errors.push(
                object_ref,
                "spec.health.frontProxyUser",
                Problem::Invalid {
                    value: "set".into(),
                    reason: "a probe presents either a token (tokenFile) or the front-proxy certificate, not both".into(),
                },
            );
            None
        }
        _ if kind.passthrough && (spec.token_file.is_some() || spec.front_proxy_user.is_some()) => {
            errors.push(
                object_ref,
                "spec.health",
                Problem::Invalid {
                    value: "tokenFile/frontProxyUser".into(),
                    reason:
                        "passthrough routes get TCP connect checks only; remove the probe identity"
                            .into(),
                },
            );
            None
        }
        (Some(path), None) => token(path, files, object_ref, errors).map(ProbeCredentials::Token),
        (None, Some(user)) => {
            let valid = !user.trim().is_empty() && header_value(user);
            if !valid {
                errors.push(
                    object_ref,
                    "spec.health.frontProxyUser",
                    Problem::Invalid {
                        value: user.clone(),
                        reason: "a user name that fits an HTTP header".into(),
                    },
                );
                None
            } else if !kind.front_proxy {
                errors.push(
                    object_ref,
                    "spec.health.frontProxyUser",
                    Problem::Missing(
                        "the route's front-proxy certificate (spec.upstream.frontProxyCertFile) to probe as a user",
                    ),
                );
                None
            } else {
                Some(ProbeCredentials::FrontProxy { user: user.clone() })
            }
        }
        (None, None) => Some(ProbeCredentials::Anonymous),
    };
    let credentials = credentials?;
    resolved.enabled.then_some(HealthCheck {
        interval: resolved.interval,
        timeout: resolved.timeout,
        healthy_threshold: resolved.healthy_threshold,
        unhealthy_threshold: resolved.unhealthy_threshold,
        path: resolved.path,
        credentials,
    })
}

/// The bearer token in `path`, trimmed; missing or empty is an error.
fn token(path: &str, files: &Files, object_ref: &ObjectRef, errors: &mut Errors) -> Option<String> {
    let problem = match files.get(path) {
        Some(Ok(bytes)) => match std::str::from_utf8(bytes).map(str::trim) {
            Ok(token) if !token.is_empty() && header_value(token) => {
                return Some(token.to_string())
            }
            Ok("") => Problem::Invalid {
                value: path.to_string(),
                reason: "the token file is empty".into(),
            },
            _ => Problem::Invalid {
                value: path.to_string(),
                reason: "the token is not a single line of printable text".into(),
            },
        },
        Some(Err(reason)) => Problem::Unreadable {
            path: path.to_string(),
            reason: reason.clone(),
        },
        None => Problem::Unreadable {
            path: path.to_string(),
            reason: "not provided by the configuration source".into(),
        },
    };
    errors.push(object_ref, "spec.health.tokenFile", problem);
    None
}
