//! Per-request backend choice and the backend state that outlives snapshots.
//!
//! A [`BackendState`] (in-flight counts, health) is keyed by the backend's address and
//! shared by every route and snapshot that names it, so a config swap neither resets
//! in-flight counts nor forgets an ejection. The decision itself is the pure
//! [`pick::choose`]; [`crate::upstream`] is the only caller.

pub mod health;
pub mod pick;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use self::health::Health;
use self::pick::{choose, Candidate, Choice, Policy};

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
    picks: AtomicU64,
    /// Passive health.
    pub health: Health,
}

impl BackendState {
    fn new(addr: SocketAddr) -> Self {
        BackendState {
            addr,
            label: addr.to_string(),
            ordinary: AtomicU64::new(0),
            long_running: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            picks: AtomicU64::new(0),
            health: Health::default(),
        }
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

/// Hands out one [`BackendState`] per address for as long as any snapshot uses it.
#[derive(Debug, Default)]
pub struct BackendRegistry {
    states: Mutex<HashMap<SocketAddr, Weak<BackendState>>>,
}

impl BackendRegistry {
    /// The state for `addr`, created on first use.
    pub fn get(&self, addr: SocketAddr) -> Arc<BackendState> {
        let mut states = match self.states.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(state) = states.get(&addr).and_then(Weak::upgrade) {
            return state;
        }
        states.retain(|_, weak| weak.strong_count() > 0);
        let state = Arc::new(BackendState::new(addr));
        states.insert(addr, Arc::downgrade(&state));
        state
    }
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
    /// Resolve `addrs` to their shared states.
    pub fn new(addrs: &[SocketAddr], policy: Policy, registry: &BackendRegistry) -> Self {
        RouteBackends {
            states: addrs.iter().map(|a| registry.get(*a)).collect(),
            policy,
            round_robin: AtomicUsize::new(0),
        }
    }

    /// The route's policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Pick a backend for one request or connection, never one in `exclude`.
    pub fn pick(&self, now: u64, exclude: &[SocketAddr]) -> Option<(Arc<BackendState>, Choice)> {
        let compared = match self.policy {
            Policy::LeastConnections => Load::Connection,
            Policy::LeastRequest | Policy::RoundRobin => Load::Ordinary,
        };
        let candidates: Vec<Candidate> = self
            .states
            .iter()
            .map(|s| Candidate {
                available: s.health.available(now),
                excluded: exclude.contains(&s.addr),
                load: s.in_flight(compared),
                picks: s.picks.load(Ordering::Relaxed),
            })
            .collect();
        let rr = match self.policy {
            Policy::RoundRobin | Policy::LeastConnections => {
                self.round_robin.fetch_add(1, Ordering::Relaxed)
            }
            Policy::LeastRequest => 0,
        };
        let choice = choose(self.policy, &candidates, rr, &mut rand::thread_rng())?;
        let state = self.states.get(choice.index)?.clone();
        state.picks.fetch_add(1, Ordering::Relaxed);
        Some((state, choice))
    }
}

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

    #[test]
    fn registry_shares_state_per_address_and_forgets_unused_ones() {
        let registry = BackendRegistry::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let a = registry.get(addr);
        let b = registry.get(addr);
        assert!(Arc::ptr_eq(&a, &b));
        let guard = InFlight::start(a.clone(), Load::Ordinary);
        assert_eq!(b.in_flight(Load::Ordinary), 1);
        drop(guard);
        assert_eq!(b.in_flight(Load::Ordinary), 0);
        drop((a, b));
        let c = registry.get(addr);
        assert_eq!(c.in_flight(Load::Ordinary), 0);
    }

    #[test]
    fn long_running_requests_do_not_count_as_load() {
        let registry = BackendRegistry::default();
        let addrs: Vec<SocketAddr> = vec![
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        ];
        let route = RouteBackends::new(&addrs, Policy::LeastRequest, &registry);
        let _watches: Vec<_> = (0..50)
            .map(|_| InFlight::start(route.states[0].clone(), Load::LongRunning))
            .collect();
        let _busy = InFlight::start(route.states[1].clone(), Load::Ordinary);
        // Backend 0 holds 50 watches but no ordinary request: it must win.
        for _ in 0..20 {
            let (state, _) = route.pick(0, &[]).unwrap();
            assert_eq!(state.addr, addrs[0]);
        }
        assert_eq!(route.states[0].in_flight(Load::LongRunning), 50);
    }

    #[test]
    fn passthrough_picks_by_open_connections_not_requests() {
        let registry = BackendRegistry::default();
        let addrs: Vec<SocketAddr> = vec![
            "127.0.0.1:3".parse().unwrap(),
            "127.0.0.1:4".parse().unwrap(),
        ];
        let route = RouteBackends::new(&addrs, Policy::LeastConnections, &registry);
        // Backend 0 is busy with requests of a terminating route that shares it, but
        // holds no passthrough connection; backend 1 holds one.
        let _requests: Vec<_> = (0..10)
            .map(|_| InFlight::start(route.states[0].clone(), Load::Ordinary))
            .collect();
        let _conn = InFlight::start(route.states[1].clone(), Load::Connection);
        for _ in 0..5 {
            assert_eq!(route.pick(0, &[]).unwrap().0.addr, addrs[0]);
        }
    }
}
