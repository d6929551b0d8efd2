//! Per-request backend choice and the backend state that outlives snapshots.
//!
//! A [`BackendState`] (in-flight counts, health) is keyed by the backend's address and
//! shared by every route and snapshot that names it, so a config swap neither resets
//! in-flight counts nor forgets an ejection. The decision itself is the pure
//! [`pick::choose`].

pub mod health;
pub mod pick;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use apigate_control::model::Balancing;

use self::health::Health;
use self::pick::{choose, Candidate, Choice};

/// Live state of one backend replica.
#[derive(Debug)]
pub struct BackendState {
    /// The replica's address.
    pub addr: SocketAddr,
    /// The address as a metric label, rendered once.
    pub label: String,
    ordinary: AtomicU64,
    long_running: AtomicU64,
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
            picks: AtomicU64::new(0),
            health: Health::default(),
        }
    }

    /// Ordinary requests in flight.
    pub fn in_flight(&self) -> u64 {
        self.ordinary.load(Ordering::Relaxed)
    }

    /// Watches and upgraded streams in flight.
    pub fn long_running(&self) -> u64 {
        self.long_running.load(Ordering::Relaxed)
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
    policy: Balancing,
    round_robin: AtomicUsize,
}

impl RouteBackends {
    /// Resolve `addrs` to their shared states.
    pub fn new(addrs: &[SocketAddr], policy: Balancing, registry: &BackendRegistry) -> Self {
        RouteBackends {
            states: addrs.iter().map(|a| registry.get(*a)).collect(),
            policy,
            round_robin: AtomicUsize::new(0),
        }
    }

    /// Pick a backend for one request, never one in `exclude`.
    pub fn pick(&self, now: u64, exclude: &[SocketAddr]) -> Option<(Arc<BackendState>, Choice)> {
        let candidates: Vec<Candidate> = self
            .states
            .iter()
            .map(|s| Candidate {
                available: s.health.available(now),
                excluded: exclude.contains(&s.addr),
                in_flight: s.in_flight(),
                picks: s.picks.load(Ordering::Relaxed),
            })
            .collect();
        let rr = match self.policy {
            Balancing::RoundRobin => self.round_robin.fetch_add(1, Ordering::Relaxed),
            Balancing::LeastRequest => 0,
        };
        let choice = choose(self.policy, &candidates, rr, &mut rand::thread_rng())?;
        let state = self.states.get(choice.index)?.clone();
        state.picks.fetch_add(1, Ordering::Relaxed);
        Some((state, choice))
    }
}

/// Counts one request as in flight on a backend until dropped.
#[derive(Debug)]
pub struct InFlight {
    state: Arc<BackendState>,
    long_running: bool,
}

impl InFlight {
    /// Start counting.
    pub fn start(state: Arc<BackendState>, long_running: bool) -> Self {
        let counter = if long_running {
            &state.long_running
        } else {
            &state.ordinary
        };
        counter.fetch_add(1, Ordering::Relaxed);
        InFlight {
            state,
            long_running,
        }
    }

    /// The backend this request is counted on.
    pub fn backend(&self) -> &Arc<BackendState> {
        &self.state
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let counter = if self.long_running {
            &self.state.long_running
        } else {
            &self.state.ordinary
        };
        counter.fetch_sub(1, Ordering::Relaxed);
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
        let guard = InFlight::start(a.clone(), false);
        assert_eq!(b.in_flight(), 1);
        drop(guard);
        assert_eq!(b.in_flight(), 0);
        drop((a, b));
        let c = registry.get(addr);
        assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn long_running_requests_do_not_count_as_load() {
        let registry = BackendRegistry::default();
        let addrs: Vec<SocketAddr> = vec![
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        ];
        let route = RouteBackends::new(&addrs, Balancing::LeastRequest, &registry);
        let _watches: Vec<_> = (0..50)
            .map(|_| InFlight::start(route.states[0].clone(), true))
            .collect();
        let _busy = InFlight::start(route.states[1].clone(), false);
        // Backend 0 holds 50 watches but no ordinary request: it must win.
        for _ in 0..20 {
            let (state, _) = route.pick(0, &[]).unwrap();
            assert_eq!(state.addr, addrs[0]);
        }
        assert_eq!(route.states[0].long_running(), 50);
    }
}
