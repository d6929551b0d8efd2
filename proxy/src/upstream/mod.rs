//! The forwarding core: every path to a replica — pooled requests, upgrades and
//! passthrough connections — goes through this module for the same rules.
//!
//! It owns, once for all paths:
//! - the choice of replica and the in-flight accounting, with ordinary requests,
//!   long-running requests and passthrough connections counted apart
//!   ([`crate::balance::Load`]);
//! - connecting with the route's timeout ([`connect`]) and the pool keys of pooled
//!   connections, whose age is bounded and jittered ([`pool`]);
//! - the retry budget, at most [`MAX_ATTEMPTS`] replicas per request;
//! - one rule for which failures count against a replica and which allow a retry
//!   ([`failure`]), and the metrics that record them;
//! - splicing upgraded and passthrough streams with a silence limit ([`splice`]).
//!
//! It exposes no HTTP-engine types: the pingora hooks in [`crate::http`] translate
//! engine events into [`Failure`]s and act on [`Verdict`]s, so the engine can change
//! underneath without touching the rules.

pub mod attempt;
pub mod connect;
pub mod failure;
pub mod pool;
pub mod splice;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use apigate_control::snapshot::{Mode, RouteSettings};
use apigate_control::Route;

pub use self::attempt::{Attempt, Attempts, NoReplica};
pub use self::failure::{Failure, Replay, Verdict};

use self::pool::{BackendPools, PoolRegistry};
use crate::balance::health::FailureOutcome;
use crate::balance::pick::Policy;
use crate::balance::{BackendRegistry, BackendState, RouteBackends};
use crate::metrics::Metrics;

/// At most this many replicas are tried for one request or connection (fewer when the
/// route has fewer).
pub const MAX_ATTEMPTS: usize = 3;

/// One route's upstream side in one snapshot: its replicas, their pools, its settings.
pub struct RouteUpstream {
    /// The route id as a metric label.
    pub label: Arc<str>,
    /// Replica states and the route's balancing policy.
    pub backends: RouteBackends,
    /// Pool generations, aligned with `backends.states` (terminate mode only).
    pools: Vec<Arc<BackendPools>>,
    /// Timeouts, ejection and limits.
    pub settings: RouteSettings,
    /// The front-proxy certificate's expiry (terminate mode with a client CA).
    front_proxy_not_after: Option<SystemTime>,
    metrics: Arc<Metrics>,
}

impl RouteUpstream {
    /// Resolve a compiled route's replicas and pools to the states that outlive
    /// snapshots.
    pub fn new(
        route: &Route,
        backends: &BackendRegistry,
        pools: &PoolRegistry,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (policy, pools, not_after) = match &route.mode {
            Mode::Terminate(t) => (
                Policy::from(t.balancing),
                route
                    .backends
                    .iter()
                    .map(|addr| pools.get(*addr, t.upstream.fingerprint))
                    .collect(),
                t.upstream.front_proxy.as_ref().map(|id| id.not_after),
            ),
            Mode::Passthrough => (Policy::LeastConnections, Vec::new(), None),
        };
        RouteUpstream {
            label: route.id.to_string().into(),
            backends: RouteBackends::new(&route.backends, policy, backends),
            pools,
            settings: route.settings,
            front_proxy_not_after: not_after,
            metrics,
        }
    }

    /// How many replicas one request may try.
    pub fn budget(&self) -> usize {
        self.backends.states.len().min(MAX_ATTEMPTS)
    }

    /// Record a failed attempt under the one rule: count it by kind, and if it counts
    /// against the replica, feed the replica's health (which may eject it).
    fn record_failure(&self, backend: &BackendState, failure: Failure) {
        self.metrics
            .upstream_failures
            .with_label_values(&[&*self.label, backend.label.as_str(), failure.label()])
            .inc();
        if !failure.counts_against_replica() {
            return;
        }
        let now = crate::balance::health::now_nanos();
        if let FailureOutcome::Ejected(duration) =
            backend.health.record_failure(now, &self.settings.ejection)
        {
            self.metrics
                .ejections
                .with_label_values(&[backend.label.as_str()])
                .inc();
            tracing::warn!(
                backend = %backend.addr,
                route = %self.label,
                failure = failure.label(),
                ejected_for_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                "backend ejected after consecutive failures"
            );
        }
    }

    fn pool_key(&self, index: usize, identity: pool::Identity, now: u64) -> u64 {
        match self.pools.get(index) {
            Some(pools) => pools.key(
                identity,
                now,
                self.settings.timeouts.upstream_max_connection_age,
                match identity {
                    pool::Identity::FrontProxy => self.front_proxy_not_after,
                    pool::Identity::Anonymous => None,
                },
            ),
            None => 0,
        }
    }

    /// Addresses of the route's replicas (for logs).
    pub fn addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.backends.states.iter().map(|b| b.addr)
    }
}
