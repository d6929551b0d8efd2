//! The attempts of one request (or passthrough connection) at a route's replicas.
//!
//! [`Attempts`] is created per request with the kind of load it is. Each
//! [`Attempts::start_next`] picks a replica it has not tried, counts the work in flight there
//! (until the next attempt or the end of the request) and names the pool to use. The
//! caller reports the outcome: [`Attempts::responded`] when a response head arrived,
//! [`Attempts::failed`] with a [`Failure`], which records it under the one rule and
//! answers whether to try another replica.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use super::failure::{verdict, Failure, Replay, ShutdownSignal, Verdict};
use super::pool::Identity;
use super::{RouteUpstream, MAX_ATTEMPTS};
use crate::balance::health::now_nanos;
use crate::balance::{BackendState, InFlight, Load};

/// One attempt: the replica and the pool key to reach it with.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The chosen replica.
    pub backend: Arc<BackendState>,
    /// Key of the connection pool (pooled path): replica, identity, material and the
    /// pool's current generation.
    pub pool_key: u64,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub number: usize,
}

/// Why no (further) replica can be tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoReplica {
    /// The route has no replica at all (all gone, or none ready).
    NoBackends,
    /// Every replica the budget allows has been tried and failed.
    Exhausted {
        /// How many were tried.
        tried: usize,
    },
}

/// The attempts of one request at one route.
pub struct Attempts {
    route: Arc<RouteUpstream>,
    load: Load,
    identity: Identity,
    tried: [Option<SocketAddr>; MAX_ATTEMPTS],
    count: usize,
    current: Option<InFlight>,
    last: Option<Arc<BackendState>>,
    responded: bool,
}

impl Attempts {
    /// Attempts for one unit of `load` that presents `identity` upstream.
    pub fn new(route: Arc<RouteUpstream>, load: Load, identity: Identity) -> Self {
        Attempts {
            route,
            load,
            identity,
            tried: [None; MAX_ATTEMPTS],
            count: 0,
            current: None,
            last: None,
            responded: false,
        }
    }

    /// The route these attempts are for.
    pub fn route(&self) -> &RouteUpstream {
        &self.route
    }

    /// Pick the next replica, or say why there is none.
    pub fn start_next(&mut self) -> Result<Attempt, NoReplica> {
        // The previous attempt's work is no longer in flight on its replica.
        self.current = None;
        if self.route.backends.states.is_empty() {
            return Err(NoReplica::NoBackends);
        }
        if self.count >= self.route.budget() {
            return Err(NoReplica::Exhausted { tried: self.count });
        }
        let mut exclude = [SocketAddr::from(([0, 0, 0, 0], 0)); MAX_ATTEMPTS];
        for (slot, tried) in exclude.iter_mut().zip(self.tried.iter().flatten()) {
            *slot = *tried;
        }
        let now = now_nanos();
        let slow_start = &self.route.settings.slow_start;
        let Some((backend, choice)) =
            self.route
                .backends
                .pick(now, &exclude[..self.count], slow_start)
        else {
            return Err(NoReplica::Exhausted { tried: self.count });
        };
        if choice.panic {
            self.route
                .metrics
                .panic_mode
                .with_label_values(&[&*self.route.label])
                .inc();
        }
        if let Some(slot) = self.tried.get_mut(self.count) {
            *slot = Some(backend.addr);
        }
        self.count += 1;
        self.current = Some(InFlight::start(backend.clone(), self.load));
        self.last = Some(backend.clone());
        Ok(Attempt {
            pool_key: self.route.pool_key(choice.index, self.identity, now),
            backend,
            number: self.count,
        })
    }

    /// A response head arrived from the current replica (any status: a replica's own
    /// 5xx is an answer, not a failure). `signal`: the head carried kube-apiserver's
    /// shutdown signal ([`ShutdownSignal::of`]).
    pub fn responded(&mut self, signal: Option<ShutdownSignal>) {
        self.responded = true;
        if let Some(backend) = &self.last {
            self.route.record_response(backend, signal);
        }
    }

    /// Whether a response head arrived.
    pub fn has_responded(&self) -> bool {
        self.responded
    }

    /// The current attempt failed. Records it under the one rule and says whether to
    /// try another replica.
    pub fn failed(&mut self, failure: Failure, replay: Replay) -> Verdict {
        let Some(backend) = self.last.clone() else {
            return Verdict::Stop;
        };
        self.route.record_failure(&backend, failure);
        let attempts_left = self.count < self.route.budget();
        let decision = verdict(failure, replay, self.responded, attempts_left);
        tracing::debug!(
            route = %self.route.label,
            backend = %backend.addr,
            failure = failure.label(),
            attempt = self.count,
            retry = decision == Verdict::Retry,
            "upstream attempt failed"
        );
        if decision == Verdict::Retry {
            self.route
                .metrics
                .retries
                .with_label_values(&[&*self.route.label, failure.label()])
                .inc();
        } else {
            // The request is over; so is its work on the replica.
            self.current = None;
        }
        decision
    }

    /// Connect to a replica with `dial`, trying others while connecting fails (nothing
    /// was sent, so any request may move). Used by the paths that make their own
    /// connections (upgrades, passthrough).
    pub async fn connect<T, F, Fut>(&mut self, mut dial: F) -> Result<(T, Attempt), NoReplica>
    where
        F: FnMut(SocketAddr) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        loop {
            let attempt = self.start_next()?;
            match dial(attempt.backend.addr).await {
                Ok(stream) => return Ok((stream, attempt)),
                Err(failure) => {
                    if self.failed(failure, Replay::NOTHING_SENT) == Verdict::Stop {
                        return Err(NoReplica::Exhausted { tried: self.count });
                    }
                }
            }
        }
    }

    /// The replica of the latest attempt, if any (for labels and logs).
    pub fn backend(&self) -> Option<&Arc<BackendState>> {
        self.last.as_ref()
    }

    /// Attempts made so far.
    pub fn tries(&self) -> usize {
        self.count
    }

    /// End the in-flight count now (the request or connection is over).
    pub fn finish(&mut self) {
        self.current = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::pick::Policy;
    use crate::balance::{BackendRegistry, RouteBackends};
    use crate::metrics::Metrics;
    use apigate_control::snapshot::{Ejection, RouteSettings, SlowStart, Timeouts};
    use std::time::Duration;

    const RAMP: SlowStart = SlowStart {
        window: Duration::from_secs(30),
        min_weight_percent: 10,
    };

    fn state_of(upstream: &RouteUpstream, index: usize) -> &'static str {
        upstream.backends.states[index]
            .health
            .state(now_nanos(), &RAMP)
            .label()
    }

    fn route(addrs: &[&str]) -> (Arc<RouteUpstream>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let addrs: Vec<SocketAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
        let registry = BackendRegistry::default();
        let backends = RouteBackends::new(&addrs, Policy::RoundRobin, &registry, &RAMP);
        let requests = super::super::request_metrics::RequestMetrics::new(
            metrics.clone(),
            "ns/r".into(),
            &backends.states,
        );
        let upstream = RouteUpstream {
            label: "ns/r".into(),
            requests,
            backends,
            pools: Vec::new(),
            draining: Vec::new(),
            settings: RouteSettings {
                timeouts: Timeouts {
                    connect: Duration::from_secs(1),
                    request: Duration::from_secs(1),
                    long_running: Duration::from_secs(1),
                    upstream_max_connection_age: Duration::from_secs(60),
                    request_header: Duration::from_secs(1),
                    idle: Duration::from_secs(1),
                },
                ejection: Ejection {
                    consecutive_failures: 2,
                    base: Duration::from_secs(5),
                    max: Duration::from_secs(10),
                    max_ejected_percent: 10,
                },
                max_request_header_bytes: 65536,
                slow_start: RAMP,
            },
            front_proxy_not_after: None,
            metrics: metrics.clone(),
            ejecting: std::sync::Mutex::new(()),
        };
        (Arc::new(upstream), metrics)
    }

    #[test]
    fn the_budget_is_min_of_three_and_the_replicas_and_never_repeats_one() {
        let (upstream, _) = route(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"]);
        let mut attempts = Attempts::new(upstream, Load::Ordinary, Identity::Anonymous);
        let mut seen = Vec::new();
        while let Ok(attempt) = attempts.start_next() {
            seen.push(attempt.backend.addr);
            assert_eq!(
                attempts.failed(Failure::Connect, Replay::NOTHING_SENT),
                if seen.len() < 3 {
                    Verdict::Retry
                } else {
                    Verdict::Stop
                }
            );
            if seen.len() == 3 {
                break;
            }
        }
        assert_eq!(seen.len(), 3);
        seen.dedup();
        assert_eq!(seen.len(), 3, "a retry goes elsewhere");
        assert_eq!(
            attempts.start_next().unwrap_err(),
            NoReplica::Exhausted { tried: 3 }
        );

        let (two, _) = route(&["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(two.budget(), 2);
        let (none, _) = route(&[]);
        let mut attempts = Attempts::new(none, Load::Ordinary, Identity::Anonymous);
        assert_eq!(attempts.start_next().unwrap_err(), NoReplica::NoBackends);
    }

    #[test]
    fn work_is_in_flight_on_the_current_replica_only() {
        let (upstream, _) = route(&["127.0.0.1:1", "127.0.0.1:2"]);
        let mut attempts = Attempts::new(upstream.clone(), Load::LongRunning, Identity::Anonymous);
        let first = attempts.start_next().unwrap();
        assert_eq!(first.backend.in_flight(Load::LongRunning), 1);
        assert_eq!(first.backend.in_flight(Load::Ordinary), 0);
        attempts.failed(Failure::NotProcessed, Replay::NOTHING_SENT);
        let second = attempts.start_next().unwrap();
        assert_eq!(first.backend.in_flight(Load::LongRunning), 0);
        assert_eq!(second.backend.in_flight(Load::LongRunning), 1);
        drop(attempts);
        assert_eq!(second.backend.in_flight(Load::LongRunning), 0);
    }

    #[test]
    fn refusals_and_unprocessed_requests_never_eject_a_replica() {
        let (upstream, metrics) = route(&["127.0.0.1:1"]);
        for _ in 0..10 {
            let mut attempts = Attempts::new(upstream.clone(), Load::Ordinary, Identity::Anonymous);
            attempts.start_next().unwrap();
            attempts.failed(Failure::Refused, Replay::NOTHING_SENT);
            attempts.start_next().ok();
            attempts.failed(Failure::NotProcessed, Replay::NOTHING_SENT);
        }
        assert_eq!(state_of(&upstream, 0), "healthy");
        assert!(metrics.render().contains("failure=\"refused\""));

        for _ in 0..2 {
            let mut attempts = Attempts::new(upstream.clone(), Load::Ordinary, Identity::Anonymous);
            attempts.start_next().unwrap();
            attempts.failed(Failure::Connect, Replay::NOTHING_SENT);
        }
        assert_eq!(state_of(&upstream, 0), "ejected");
    }

    /// Requests until one reaches `addr` and fails there (if `addr` takes requests).
    fn fail_on(upstream: &Arc<RouteUpstream>, addr: SocketAddr) {
        for _ in 0..10 {
            let mut attempts = Attempts::new(upstream.clone(), Load::Ordinary, Identity::Anonymous);
            let Ok(attempt) = attempts.start_next() else {
                return;
            };
            if attempt.backend.addr == addr {
                attempts.failed(Failure::Connect, Replay::NOTHING_SENT);
                return;
            }
            attempts.responded(None);
        }
    }

    #[test]
    fn ejections_stop_at_the_route_cap_which_always_allows_one() {
        assert_eq!(crate::upstream::ejection_cap(3, 10), 1);
        assert_eq!(crate::upstream::ejection_cap(20, 10), 2);
        assert_eq!(crate::upstream::ejection_cap(4, 50), 2);
        let addrs = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"];
        let (upstream, metrics) = route(&addrs);
        // Every replica fails: only one may be ejected (10% of 3, at least one).
        for addr in addrs {
            for _ in 0..4 {
                fail_on(&upstream, addr.parse().unwrap());
            }
        }
        let states: Vec<_> = (0..3).map(|i| state_of(&upstream, i)).collect();
        assert_eq!(
            states.iter().filter(|s| **s == "ejected").count(),
            1,
            "{states:?}"
        );
        let text = metrics.render();
        assert!(
            text.contains("apigate_backend_transitions_total{to=\"ejected\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn a_shutdown_429_drains_its_replica_and_throttling_drains_nothing() {
        let (upstream, _) = route(&["127.0.0.1:1", "127.0.0.1:2"]);
        let answer = |signal| {
            let mut attempts = Attempts::new(upstream.clone(), Load::Ordinary, Identity::Anonymous);
            let attempt = attempts.start_next().unwrap();
            attempts.responded(signal);
            attempt.backend.addr
        };
        // API Priority and Fairness: 429 + Retry-After on a kept connection. Without
        // a prober to ask, nothing changes.
        for _ in 0..10 {
            answer(ShutdownSignal::in_head(
                429,
                [(&b"Retry-After"[..], &b"1"[..])],
            ));
        }
        assert_eq!(
            (state_of(&upstream, 0), state_of(&upstream, 1)),
            ("healthy", "healthy")
        );
        let announced = answer(ShutdownSignal::in_head(
            429,
            [
                (&b"Retry-After"[..], &b"5"[..]),
                (&b"Connection"[..], &b"close"[..]),
            ],
        ));
        let index = usize::from(upstream.backends.states[1].addr == announced);
        assert_eq!(state_of(&upstream, index), "draining");
        // No new request goes there.
        for _ in 0..10 {
            assert_ne!(answer(None), announced);
        }
    }

    #[tokio::test]
    async fn connect_moves_on_while_connecting_fails() {
        let (upstream, _) = route(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
        let mut attempts = Attempts::new(upstream, Load::Connection, Identity::Anonymous);
        let mut dialed = Vec::new();
        let result = attempts
            .connect(|addr| {
                dialed.push(addr);
                let ok = dialed.len() == 2;
                async move {
                    if ok {
                        Ok(addr)
                    } else {
                        Err(Failure::ConnectTimeout)
                    }
                }
            })
            .await;
        let (addr, attempt) = result.unwrap();
        assert_eq!(attempt.number, 2);
        assert_eq!(addr, dialed[1]);
        assert_eq!(attempt.backend.in_flight(Load::Connection), 1);
    }
}
