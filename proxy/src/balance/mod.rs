//! Per-request backend choice and the backend state that outlives snapshots.
//!
//! A [`BackendState`] (in-flight counts, health) is keyed by the backend's address and
//! shared by every route and snapshot that names it, so a config swap neither resets
//! in-flight counts nor forgets an ejection. The decision itself is the pure
//! [`pick::choose`]; [`crate::upstream`] is the only caller.

pub mod health;
pub mod pick;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::weak_map::WeakMap;

use apigate_control::snapshot::SlowStart;

use self::health::{now_nanos, Health, Transition};
use self::pick::{choose, Candidate, Choice, Policy};
use crate::metrics::Metrics;

/// What an in-flight unit of work costs a replica, counted apart so that one kind never
/// distorts the balancing of another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// A normal request: the load least-request balancing compares.
    Ordinary,
    /// A watch, followed log or upgraded stream: long, cheap for the replica.
    LongRunning,
    /// A passthrough connection: the load least-connections compares.
    Connection,
}

impl Load {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Load::Ordinary => "ordinary",
            Load::LongRunning => "long_running",
            Load::Connection => "connection",
        }
    }
}

/// Live state of one backend replica.
#[derive(Debug)]
pub struct BackendState {
    /// The replica's address.
    pub addr: SocketAddr,
    /// The address as a metric label, rendered once.
    pub label: String,
    ordinary: AtomicU64,
    long_running: AtomicU64,
    connections: AtomicU64,
    recent: RecentLoad,
    /// Health: passive failures, probes, drain ([`health::State`]).
    pub health: Health,
    /// Probers running for it (one per probe identity): while there are none, no
    /// unready verdict can stand.
    probers: AtomicUsize,
    /// A response suggested a shutdown: its prober should probe now.
    suspected: tokio::sync::Notify,
}

impl BackendState {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        BackendState {
            addr,
            label: addr.to_string(),
            ordinary: AtomicU64::new(0),
            long_running: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            recent: RecentLoad::default(),
            // Ramping until the route says every replica is new (see RouteBackends).
            health: Health::new(now_nanos(), true),
            probers: AtomicUsize::new(0),
            suspected: tokio::sync::Notify::new(),
        }
    }

    /// A response looked like kube-apiserver's shutdown 429 but could also be API
    /// Priority and Fairness throttling one user: ask a prober of the replica to probe
    /// now (nothing happens where none runs).
    pub fn suspect_shutdown(&self) {
        self.suspected.notify_one();
    }

    /// Resolves at the next [`BackendState::suspect_shutdown`] (for its prober).
    pub fn shutdown_suspected(&self) -> tokio::sync::futures::Notified<'_> {
        self.suspected.notified()
    }

    /// Whether any prober checks this replica now.
    pub fn probed(&self) -> bool {
        self.probers.load(Ordering::Acquire) > 0
    }

    /// A prober for it started.
    pub(crate) fn prober_started(&self) {
        self.probers.fetch_add(1, Ordering::AcqRel);
    }

    /// A prober for it stopped; true when it was the last one.
    pub(crate) fn prober_stopped(&self) -> bool {
        self.probers.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Requests sent to it recently (decayed, see [`RecentLoad`]).
    pub fn recent(&self) -> f64 {
        self.recent.get(now_nanos())
    }

    fn counter(&self, load: Load) -> &AtomicU64 {
        match load {
            Load::Ordinary => &self.ordinary,
            Load::LongRunning => &self.long_running,
            Load::Connection => &self.connections,
        }
    }

    /// Units of `load` in flight on this replica.
    pub fn in_flight(&self, load: Load) -> u64 {
        self.counter(load).load(Ordering::Relaxed)
    }
}

/// Requests sent to a replica recently: a count that halves every second, so ties
/// between idle replicas go to the one used least lately, and a replica that joins or
/// comes back is caught up with within seconds. One atomic word: the count (`f32`) and
/// the millisecond of its last update.
#[derive(Debug, Default)]
pub struct RecentLoad(AtomicU64);

const RECENT_HALF_LIFE_MS: f64 = 1000.0;

impl RecentLoad {
    fn decayed(word: u64, now_ms: u32) -> f64 {
        let value = f64::from(f32::from_bits((word >> 32) as u32));
        let elapsed = now_ms.wrapping_sub(word as u32);
        value * 0.5f64.powf(f64::from(elapsed) / RECENT_HALF_LIFE_MS)
    }

    fn ms(now: u64) -> u32 {
        (now / 1_000_000) as u32
    }

    /// The count at `now` (nanos).
    pub fn get(&self, now: u64) -> f64 {
        Self::decayed(self.0.load(Ordering::Relaxed), Self::ms(now))
    }

    /// Count one more at `now` (nanos).
    pub fn add(&self, now: u64) {
        let ms = Self::ms(now);
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                let value = Self::decayed(word, ms) + 1.0;
                Some((u64::from((value as f32).to_bits()) << 32) | u64::from(ms))
            });
    }
}

/// Hands out one [`BackendState`] per address for as long as any snapshot (or any
/// request still in flight on it) uses it.
#[derive(Debug, Default)]
pub struct BackendRegistry {
    states: Mutex<WeakMap<SocketAddr, BackendState>>,
}

impl BackendRegistry {
    /// The state for `addr`, created on first use; `true` when it was created now.
    pub fn get(&self, addr: SocketAddr) -> (Arc<BackendState>, bool) {
        let mut states = match self.states.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(state) = states.get(&addr) {
            return (state, false);
        }
        let state = Arc::new(BackendState::new(addr));
        states.insert(addr, &state);
        (state, true)
    }

    /// Every replica still alive (used by a snapshot or by work in flight).
    pub fn all(&self) -> Vec<Arc<BackendState>> {
        let states = match self.states.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut all: Vec<_> = states.live().collect();
        all.sort_by_key(|s| s.addr);
        all
    }
}

/// Log and count a health transition of `backend`: one line per change of state.
pub fn observe(
    metrics: &Metrics,
    backend: &BackendState,
    transition: Option<Transition>,
    cause: &'static str,
) {
    let Some(Transition { from, to }) = transition else {
        return;
    };
    metrics
        .backend_transitions
        .with_label_values(&[to.label()])
        .inc();
    tracing::info!(
        backend = %backend.addr,
        from = from.label(),
        to = to.label(),
        cause,
        "backend state changed"
    );
}

/// The backends of one route in one snapshot, with the route's balancing policy.
#[derive(Debug)]
pub struct RouteBackends {
    /// Backend states, in the route's order.
    pub states: Vec<Arc<BackendState>>,
    policy: Policy,
    round_robin: AtomicUsize,
}

impl RouteBackends {
    /// Resolve `addrs` to their shared states. A replica new to apigate ramps up
    /// (slow start) unless every replica of the route is new.
    pub fn new(
        addrs: &[SocketAddr],
        policy: Policy,
        registry: &BackendRegistry,
        slow_start: &SlowStart,
    ) -> Self {
        let resolved: Vec<(Arc<BackendState>, bool)> =
            addrs.iter().map(|a| registry.get(*a)).collect();
        let all_new = resolved.iter().all(|(_, created)| *created);
        let now = now_nanos();
        for (state, created) in &resolved {
            if *created && all_new {
                state.health.settle(now, slow_start);
            }
        }
        RouteBackends {
            states: resolved.into_iter().map(|(state, _)| state).collect(),
            policy,
            round_robin: AtomicUsize::new(0),
        }
    }

    /// The route's policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Pick a backend for one request or connection, never one in `exclude`. A
    /// backend in probation is picked only by the request that claims its trial.
    pub fn pick(
        &self,
        now: u64,
        exclude: &[SocketAddr],
        slow_start: &SlowStart,
    ) -> Option<(Arc<BackendState>, Choice)> {
        let compared = match self.policy {
            Policy::LeastConnections => Load::Connection,
            Policy::LeastRequest | Policy::RoundRobin => Load::Ordinary,
        };
        let candidate = |s: &Arc<BackendState>| Candidate {
            admission: s.health.admission(now, slow_start),
            excluded: exclude.contains(&s.addr),
            load: s.in_flight(compared),
            recent: s.recent.get(now),
        };
        // On the stack for the routes of a few replicas (every request picks).
        let mut inline = [UNSET; INLINE_CANDIDATES];
        let mut spilled = Vec::new();
        let candidates: &mut [Candidate] = if self.states.len() <= INLINE_CANDIDATES {
            for (slot, state) in inline.iter_mut().zip(&self.states) {
                *slot = candidate(state);
            }
            &mut inline[..self.states.len()]
        } else {
            spilled.extend(self.states.iter().map(candidate));
            &mut spilled
        };
        let rr = match self.policy {
            Policy::RoundRobin | Policy::LeastConnections => {
                self.round_robin.fetch_add(1, Ordering::Relaxed)
            }
            Policy::LeastRequest => 0,
        };
        // A trial another request claimed first is out for this pick; choose again.
        for _ in 0..=self.states.len() {
            let choice = choose(self.policy, candidates, rr, &mut rand::thread_rng())?;
            let state = self.states.get(choice.index)?;
            if choice.trial && !state.health.claim_trial(now, slow_start) {
                if let Some(c) = candidates.get_mut(choice.index) {
                    c.admission = health::Admission::Out;
                }
                continue;
            }
            state.recent.add(now);
            return Some((state.clone(), choice));
        }
        None
    }
}

/// Replicas whose candidates a pick keeps on the stack.
const INLINE_CANDIDATES: usize = 8;
/// A placeholder for the unused slots.
const UNSET: Candidate = Candidate {
    admission: health::Admission::Out,
    excluded: true,
    load: 0,
    recent: 0.0,
};

/// Counts one unit of work as in flight on a backend until dropped.
#[derive(Debug)]
pub struct InFlight {
    state: Arc<BackendState>,
    load: Load,
}

impl InFlight {
    /// Start counting.
    pub fn start(state: Arc<BackendState>, load: Load) -> Self {
        state.counter(load).fetch_add(1, Ordering::Relaxed);
        InFlight { state, load }
    }

    /// The backend this work is counted on.
    pub fn backend(&self) -> &Arc<BackendState> {
        &self.state
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state
            .counter(self.load)
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const RAMP: SlowStart = SlowStart {
        window: Duration::from_secs(30),
        min_weight_percent: 10,
    };

    #[test]
    fn recent_load_halves_every_second() {
        let load = RecentLoad::default();
        let s = 1_000_000_000;
        for _ in 0..4 {
            load.add(10 * s);
        }
        assert!((load.get(10 * s) - 4.0).abs() < 1e-6);
        assert!((load.get(11 * s) - 2.0).abs() < 1e-3);
        assert!(load.get(30 * s) < 1e-4);
    }

    #[test]
    fn a_replica_joining_serving_ones_ramps_and_new_routes_do_not() {
        let registry = BackendRegistry::default();
        let a: SocketAddr = "127.0.0.1:11".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:12".parse().unwrap();
        let first = RouteBackends::new(&[a], Policy::LeastRequest, &registry, &RAMP);
        let now = now_nanos();
        assert_eq!(first.states[0].health.state(now, &RAMP).label(), "healthy");
        let second = RouteBackends::new(&[a, b], Policy::LeastRequest, &registry, &RAMP);
        assert_eq!(
            second.states[1].health.state(now, &RAMP).label(),
            "slow_start"
        );
    }

    #[test]
    fn registry_shares_state_per_address_and_forgets_unused_ones() {
        let registry = BackendRegistry::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (a, created) = registry.get(addr);
        assert!(created);
        let (b, again) = registry.get(addr);
        assert!(!again);
        assert!(Arc::ptr_eq(&a, &b));
        let guard = InFlight::start(a.clone(), Load::Ordinary);
        assert_eq!(b.in_flight(Load::Ordinary), 1);
        drop(guard);
        assert_eq!(b.in_flight(Load::Ordinary), 0);
        drop((a, b));
        let (c, created) = registry.get(addr);
        assert!(created);
        assert_eq!(c.in_flight(Load::Ordinary), 0);
    }

    #[test]
    fn long_running_requests_do_not_count_as_load() {
        let registry = BackendRegistry::default();
        let addrs: Vec<SocketAddr> = vec![
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        ];
        let route = RouteBackends::new(&addrs, Policy::LeastRequest, &registry, &RAMP);
        let _watches: Vec<_> = (0..50)
            .map(|_| InFlight::start(route.states[0].clone(), Load::LongRunning))
            .collect();
        let _busy = InFlight::start(route.states[1].clone(), Load::Ordinary);
        // Backend 0 holds 50 watches but no ordinary request: it must win.
        for _ in 0..20 {
            let (state, _) = route.pick(now_nanos(), &[], &RAMP).unwrap();
            assert_eq!(state.addr, addrs[0]);
        }
        assert_eq!(route.states[0].in_flight(Load::LongRunning), 50);
    }

    #[test]
    fn routes_of_few_and_of_many_replicas_rotate_and_honour_exclusions() {
        // 3 replicas fit the pick's stack buffer; 12 do not.
        for count in [3u16, INLINE_CANDIDATES as u16, 12] {
            let registry = BackendRegistry::default();
            let addrs: Vec<SocketAddr> = (0..count)
                .map(|i| SocketAddr::from(([127, 0, 0, 1], 100 + i)))
                .collect();
            let route = RouteBackends::new(&addrs, Policy::RoundRobin, &registry, &RAMP);
            // Round robin over everyone but the first, which this request already tried.
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..2 * count {
                let (state, _) = route.pick(now_nanos(), &addrs[..1], &RAMP).unwrap();
                assert_ne!(state.addr, addrs[0], "{count} replicas");
                seen.insert(state.addr);
            }
            assert_eq!(seen.len(), usize::from(count) - 1, "{count} replicas");
            // Least request with all but the last tried already: the last, and with all
            // tried, none.
            let route = RouteBackends::new(&addrs, Policy::LeastRequest, &registry, &RAMP);
            let last = addrs.len() - 1;
            for _ in 0..10 {
                let (state, _) = route.pick(now_nanos(), &addrs[..last], &RAMP).unwrap();
                assert_eq!(state.addr, addrs[last], "{count} replicas");
            }
            assert!(route.pick(now_nanos(), &addrs, &RAMP).is_none());
        }
    }

    #[test]
    fn passthrough_picks_by_open_connections_not_requests() {
        let registry = BackendRegistry::default();
        let addrs: Vec<SocketAddr> = vec![
            "127.0.0.1:3".parse().unwrap(),
            "127.0.0.1:4".parse().unwrap(),
        ];
        let route = RouteBackends::new(&addrs, Policy::LeastConnections, &registry, &RAMP);
        // Backend 0 is busy with requests of a terminating route that shares it, but
        // holds no passthrough connection; backend 1 holds one.
        let _requests: Vec<_> = (0..10)
            .map(|_| InFlight::start(route.states[0].clone(), Load::Ordinary))
            .collect();
        let _conn = InFlight::start(route.states[1].clone(), Load::Connection);
        for _ in 0..5 {
            assert_eq!(
                route.pick(now_nanos(), &[], &RAMP).unwrap().0.addr,
                addrs[0]
            );
        }
    }
}
