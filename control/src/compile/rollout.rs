//! Validate `GatewayConfig.spec.rollout` into [`RolloutSettings`], and check that its
//! canary selection leaves routes on both sides.

use std::time::Duration;

use crate::error::{Errors, ObjectRef, Problem};
use crate::model::{ApiServerRoute, RolloutSpec};
use crate::rollout::{Gates, RolloutSettings, Selector, DEFAULT_CANARY_LABEL};

use super::setting::{setting, DurationSetting, DAY, MILLISECOND};

const BAKE: DurationSetting = setting(
    "bakeTime",
    crate::rollout::DEFAULT_BAKE,
    Duration::ZERO,
    DAY,
);
const MAX_BAKE: DurationSetting = setting("maxBakeTime", Duration::ZERO, Duration::ZERO, DAY);
const MIN_P99: DurationSetting = setting(
    "minP99Latency",
    Duration::from_millis(100),
    MILLISECOND,
    Duration::from_secs(60),
);

const PREFIX: &str = "spec.rollout";

/// Resolve the rollout settings; errors name the field.
pub(super) fn compile(
    spec: Option<&RolloutSpec>,
    object_ref: &ObjectRef,
    errors: &mut Errors,
) -> RolloutSettings {
    let Some(spec) = spec else {
        return RolloutSettings::default();
    };
    let canary = match (&spec.canary.label, spec.canary.fraction) {
        (Some(_), Some(_)) => {
            errors.push(
                object_ref,
                format!("{PREFIX}.canary"),
                Problem::Invalid {
                    value: "label and fraction".into(),
                    reason: "choose canary routes by label or by fraction, not both".into(),
                },
            );
            Selector::Label(DEFAULT_CANARY_LABEL.into())
        }
        (Some(label), None) if label.trim().is_empty() => {
            errors.push(
                object_ref,
                format!("{PREFIX}.canary.label"),
                Problem::Missing("a label key, e.g. apigate.dev/canary"),
            );
            Selector::Label(DEFAULT_CANARY_LABEL.into())
        }
        (Some(label), None) => Selector::Label(label.trim().to_string()),
        (None, Some(fraction)) => {
            if !(fraction > 0.0 && fraction <= 1.0) {
                errors.push(
                    object_ref,
                    format!("{PREFIX}.canary.fraction"),
                    Problem::Invalid {
                        value: fraction.to_string(),
                        reason: "must be above 0 and at most 1".into(),
                    },
                );
            }
            Selector::Fraction(fraction)
        }
        (None, None) => Selector::Label(DEFAULT_CANARY_LABEL.into()),
    };
    let bake = BAKE.resolve_at(
        PREFIX,
        spec.bake_time,
        crate::rollout::DEFAULT_BAKE,
        object_ref,
        errors,
    );
    let max_bake = MAX_BAKE.resolve_at(PREFIX, spec.max_bake_time, bake * 4, object_ref, errors);
    if max_bake < bake {
        errors.push(
            object_ref,
            format!("{PREFIX}.maxBakeTime"),
            Problem::Invalid {
                value: humantime::format_duration(max_bake).to_string(),
                reason: format!(
                    "must be at least bakeTime ({})",
                    humantime::format_duration(bake)
                ),
            },
        );
    }
    let g = &spec.gates;
    let gates = if g.enabled.unwrap_or(true) {
        if bake.is_zero() {
            errors.push(
                object_ref,
                format!("{PREFIX}.bakeTime"),
                Problem::Invalid {
                    value: "0s".into(),
                    reason: "with gates on, a bake time of 0 leaves them no traffic to judge; set a bake time or gates.enabled: false".into(),
                },
            );
        }
        let d = Gates::default();
        let mut rate = |field: &str, value: Option<f64>, default: f64| -> f64 {
            let Some(value) = value else {
                return default;
            };
            if !(0.0..=1.0).contains(&value) {
                errors.push(
                    object_ref,
                    format!("{PREFIX}.gates.{field}"),
                    Problem::Invalid {
                        value: value.to_string(),
                        reason: "a share must be between 0 and 1".into(),
                    },
                );
                return default;
            }
            value
        };
        let min_success_rate = rate("minSuccessRate", g.min_success_rate, d.min_success_rate);
        let max_upstream_error_rate = rate(
            "maxUpstreamErrorRate",
            g.max_upstream_error_rate,
            d.max_upstream_error_rate,
        );
        let max_tls_handshake_failure_rate = rate(
            "maxTLSHandshakeFailureRate",
            g.max_tls_handshake_failure_rate,
            d.max_tls_handshake_failure_rate,
        );
        let max_acl_denial_rate = rate(
            "maxACLDenialRate",
            g.max_acl_denial_rate,
            d.max_acl_denial_rate,
        );
        let min_healthy_backends = rate(
            "minHealthyBackends",
            g.min_healthy_backends,
            d.min_healthy_backends,
        );
        let max_p99_latency_ratio = match g.max_p99_latency_ratio {
            Some(ratio) if !(1.0..=1000.0).contains(&ratio) => {
                errors.push(
                    object_ref,
                    format!("{PREFIX}.gates.maxP99LatencyRatio"),
                    Problem::Invalid {
                        value: ratio.to_string(),
                        reason: "must be between 1 and 1000".into(),
                    },
                );
                d.max_p99_latency_ratio
            }
            Some(ratio) => ratio,
            None => d.max_p99_latency_ratio,
        };
        let min_p99_latency = MIN_P99.resolve_at(
            &format!("{PREFIX}.gates"),
            g.min_p99_latency,
            d.min_p99_latency,
            object_ref,
            errors,
        );
        Some(Gates {
            min_requests: g.min_requests.unwrap_or(d.min_requests).max(1),
            min_connections: g.min_connections.unwrap_or(d.min_connections).max(1),
            min_success_rate,
            max_upstream_error_rate,
            max_tls_handshake_failure_rate,
            max_acl_denial_rate,
            min_healthy_backends,
            max_p99_latency_ratio,
            min_p99_latency,
        })
    } else {
        None
    };
    RolloutSettings {
        enabled: spec.enabled,
        canary,
        allow_all_routes: spec.canary.allow_all_routes,
        bake,
        max_bake,
        gates,
    }
}

/// With rollouts on, the canary selection must leave routes on both sides (see
/// [`crate::rollout::selection_problem`]).
pub(super) fn check_selection<'a>(
    settings: &RolloutSettings,
    routes: impl Iterator<Item = &'a ApiServerRoute> + Clone,
    object_ref: &ObjectRef,
    errors: &mut Errors,
) {
    if let Some((field, problem)) = crate::rollout::selection_problem(settings, routes) {
        errors.push(object_ref, field, problem);
    }
}
