//! `GatewayConfig.spec.rollout`: how a new configuration revision reaches the routes.

use serde::Deserialize;

use super::Duration;

/// Canary rollouts of configuration (off by default): a new revision of route policy is
/// applied to the canary routes first, judged by gates over a bake time, then promoted
/// to every route, or frozen with the canaries back on the previous revision.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutSpec {
    /// Roll out at all (default `false`: every revision applies at once).
    #[serde(default)]
    pub enabled: bool,
    /// Which routes see a new revision first.
    #[serde(default)]
    pub canary: CanarySpec,
    /// How long the canary routes run the new revision before the gates decide
    /// (default `2m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bake_time: Option<Duration>,
    /// While the gates lack traffic to judge, the bake is extended up to this in total
    /// (default four bake times); then the rollout holds and says why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bake_time: Option<Duration>,
    /// The gates and their thresholds.
    #[serde(default)]
    pub gates: GatesSpec,
}

/// How canary routes are chosen: by label, or a fraction of all routes.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanarySpec {
    /// Routes whose `metadata.labels` has this key with the value `"true"` are canaries
    /// (default `apigate.dev/canary` when `fraction` is not set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Instead of a label: this share of the routes (0 to 1, at least one route), chosen
    /// by a stable hash of their names so the choice does not move between revisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// A selection that matches every route leaves no route to protect; it is refused
    /// unless this is `true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_all_routes: bool,
}

/// Gate thresholds. Each gate compares the canary routes under the new revision with
/// the same routes before it and with its threshold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatesSpec {
    /// Judge at all (default `true`); without gates a revision is promoted after the
    /// bake time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Requests the canary routes must serve in a window for the request gates to
    /// judge (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
    /// Connections the canary routes must see for the connection gates to judge
    /// (default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_connections: Option<u64>,
    /// Lowest share of requests not failed by apigate or the upstream connection
    /// (default 0.99; a replica's own 5xx do not count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_success_rate: Option<f64>,
    /// Highest share of upstream attempts failing to connect or in TLS (default 0.01).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_upstream_error_rate: Option<f64>,
    /// Highest share of admitted connections failing the TLS handshake (default 0.1).
    #[serde(rename = "maxTLSHandshakeFailureRate")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tls_handshake_failure_rate: Option<f64>,
    /// Highest share of connections the allowlists deny (default 0.5).
    #[serde(rename = "maxACLDenialRate")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_acl_denial_rate: Option<f64>,
    /// Lowest share of the canary routes' replicas able to take requests (default 0.5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_healthy_backends: Option<f64>,
    /// Highest ratio of the canary routes' p99 latency to their baseline p99
    /// (default 2, at least 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_p99_latency_ratio: Option<f64>,
    /// A p99 below this never fails the latency gate, whatever the ratio (default
    /// `100ms`): fast routes jitter by large ratios.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_p99_latency: Option<Duration>,
}
