//! Rollout settings as compiled from `GatewayConfig.spec.rollout`: what the proxy's
//! rollout controller reads. A leaf module: the snapshot carries these settings, and
//! [`crate::rollout`] works on snapshots.

use std::time::Duration;

/// How a new revision of route policy reaches the routes.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutSettings {
    /// Off: every revision applies at once to every route (the default).
    pub enabled: bool,
    /// Which routes are canaries.
    pub canary: Selector,
    /// A selection matching every route is accepted.
    pub allow_all_routes: bool,
    /// How long the canaries run a revision before it can be promoted.
    pub bake: Duration,
    /// Longest total bake while the gates are inconclusive; then the rollout holds.
    pub max_bake: Duration,
    /// The gates; `None` promotes after the bake without judging.
    pub gates: Option<Gates>,
}

impl Default for RolloutSettings {
    fn default() -> Self {
        RolloutSettings {
            enabled: false,
            canary: Selector::Label(DEFAULT_CANARY_LABEL.into()),
            allow_all_routes: false,
            bake: DEFAULT_BAKE,
            max_bake: DEFAULT_BAKE * 4,
            gates: Some(Gates::default()),
        }
    }
}

/// The label that marks a canary route unless another is configured.
pub const DEFAULT_CANARY_LABEL: &str = "apigate.dev/canary";

/// Default bake time: Flagger's analysis runs a minute; two give a kube-apiserver's
/// clients (controllers relisting, kubelets heartbeating every 10 s) time to show up.
pub const DEFAULT_BAKE: Duration = Duration::from_secs(120);

/// Which routes are canaries.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    /// Routes labelled `<key>: "true"`.
    Label(String),
    /// This share of the routes (at least one), by a stable hash of their ids.
    Fraction(f64),
}

/// Gate thresholds, with the traffic they need to judge.
#[derive(Debug, Clone, PartialEq)]
pub struct Gates {
    /// Requests a window needs before the request gates judge.
    pub min_requests: u64,
    /// Connections a window needs before the connection gates judge.
    pub min_connections: u64,
    /// Lowest success rate (apigate's own 5xx and upstream failures count against it).
    pub min_success_rate: f64,
    /// Highest upstream connect + TLS failure rate per attempt.
    pub max_upstream_error_rate: f64,
    /// Highest TLS handshake failure rate per admitted connection.
    pub max_tls_handshake_failure_rate: f64,
    /// Highest allowlist denial rate per connection.
    pub max_acl_denial_rate: f64,
    /// Lowest share of replicas able to take requests.
    pub min_healthy_backends: f64,
    /// Highest p99 latency ratio to the baseline.
    pub max_p99_latency_ratio: f64,
    /// A p99 below this never fails the latency gate.
    pub min_p99_latency: Duration,
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            min_requests: 100,
            min_connections: 10,
            min_success_rate: 0.99,
            max_upstream_error_rate: 0.01,
            max_tls_handshake_failure_rate: 0.1,
            max_acl_denial_rate: 0.5,
            min_healthy_backends: 0.5,
            max_p99_latency_ratio: 2.0,
            min_p99_latency: Duration::from_millis(100),
        }
    }
}
