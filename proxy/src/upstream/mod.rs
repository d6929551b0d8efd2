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
pub mod request_metrics;
pub mod splice;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use apigate_control::snapshot::{Mode, RouteSettings};
use apigate_control::Route;

pub use self::attempt::{Attempt, Attempts, NoReplica};
pub use self::failure::{Failure, Replay, ShutdownSignal, Verdict};

use self::pool::{BackendPools, PoolRegistry};
use crate::balance::health::{now_nanos, DrainCause, FailureOutcome};
use crate::balance::pick::Policy;
use crate::balance::{observe, BackendRegistry, BackendState, RouteBackends};
use crate::metrics::Metrics;

/// How many of `replicas` passive ejection may take out at once: `percent` of them,
/// rounded down, but always one (3 replicas at 10% → 1), so that a single broken
/// replica of a small route is still ejected.
pub fn ejection_cap(replicas: usize, percent: u8) -> usize {
    (replicas * usize::from(percent) / 100).max(1)
}

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
    /// Replicas whose endpoint is terminating: never picked, held so that they stay
    /// visible as draining while the route lists them.
    pub draining: Vec<Arc<BackendState>>,
    /// Timeouts, ejection and limits.
    pub settings: RouteSettings,
    /// The front-proxy certificate's expiry (terminate mode with a client CA).
    front_proxy_not_after: Option<SystemTime>,
    metrics: Arc<Metrics>,
    /// Serializes passive ejections of this route's replicas (see `record_failure`).
    ejecting: std::sync::Mutex<()>,
    /// Its per-request series, resolved once.
    pub requests: request_metrics::RequestMetrics,
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
        let slow_start = &route.settings.slow_start;
        let registry = backends;
        let backends = RouteBackends::new(&route.backends, policy, registry, slow_start);
        // Kubernetes: a terminating endpoint drains; one that is ready again serves.
        let now = now_nanos();
        for state in &backends.states {
            observe(
                &metrics,
                state,
                state.health.undrain(now, slow_start),
                "endpoint_ready",
            );
        }
        let draining: Vec<Arc<BackendState>> = route
            .draining
            .iter()
            .map(|addr| {
                let (state, _) = registry.get(*addr);
                let transition = state.health.drain(now, DrainCause::Terminating, slow_start);
                observe(&metrics, &state, transition, "endpoint_terminating");
                state
            })
            .collect();
        let label: Arc<str> = route.id.to_string().into();
        let requests =
            request_metrics::RequestMetrics::new(metrics.clone(), label.clone(), &backends.states);
        RouteUpstream {
            label,
            requests,
            backends,
            draining,
            pools,
            settings: route.settings,
            front_proxy_not_after: not_after,
            metrics,
            ejecting: std::sync::Mutex::new(()),
        }
    }

    /// How many replicas one request may try.
    pub fn budget(&self) -> usize {
        self.backends.states.len().min(MAX_ATTEMPTS)
    }

    /// Record a failed attempt under the one rule: count it by kind, and if it counts
    /// against the replica, feed the replica's health (which may eject it, within the
    /// route's cap on ejected replicas).
    fn record_failure(&self, backend: &BackendState, failure: Failure) {
        self.metrics
            .upstream_failures
            .with_label_values(&[&*self.label, backend.label.as_str(), failure.label()])
            .inc();
        if !failure.counts_against_replica() {
            return;
        }
        let now = now_nanos();
        let settings = &self.settings;
        // Counting the ejected replicas and ejecting one is one step: concurrent
        // failures on several replicas cannot all see room under the cap.
        let (outcome, transition) = {
            let _one_at_a_time = match self.ejecting.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            backend.health.record_failure(
                now,
                &settings.ejection,
                &settings.slow_start,
                self.may_eject(),
            )
        };
        observe(&self.metrics, backend, transition, failure.label());
        if let FailureOutcome::Ejected(duration) = outcome {
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

    /// Whether one more passive ejection stays within the route's cap: at most
    /// `maxEjectedPercent` of its replicas, and always at least one. Replicas that are
    /// out for other reasons (unready, draining) do not count.
    fn may_eject(&self) -> bool {
        let states = &self.backends.states;
        let ejected = states.iter().filter(|s| s.health.ejected()).count();
        ejection_cap(states.len(), self.settings.ejection.max_ejected_percent) > ejected
    }

    /// A response head arrived from `backend`: the attempt succeeded, and the head may
    /// carry kube-apiserver's shutdown signal.
    fn record_response(&self, backend: &BackendState, signal: Option<ShutdownSignal>) {
        let now = now_nanos();
        let slow_start = &self.settings.slow_start;
        let transition = backend.health.record_success(now, slow_start);
        observe(&self.metrics, backend, transition, "response");
        match signal {
            None => {}
            Some(ShutdownSignal::Announced) => {
                let transition = backend.health.drain(now, DrainCause::Shutdown, slow_start);
                observe(&self.metrics, backend, transition, "shutdown_429");
            }
            Some(ShutdownSignal::Suspected) => {
                // A 429 with Retry-After is also API Priority and Fairness throttling
                // one user: only the replica's own readiness can tell, so ask it now.
                backend.suspect_shutdown();
            }
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
