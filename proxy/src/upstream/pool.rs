//! Upstream connection-pool keys with a bounded, jittered age.
//!
//! Pooled upstream connections are found by a key; a request can only reuse a
//! connection made under the same key. A key here names a *generation* of one
//! replica's pool for one identity (front-proxy certificate or none) and one set of TLS
//! material. Each generation lasts a random 90–100% of `upstreamMaxConnectionAge` from
//! its first use, and never past the front-proxy certificate's `notAfter`; then the
//! next request gets a fresh key, so new connections are made while old ones finish
//! their streams and idle out. Because a generation starts at first use and its
//! length is jittered, the replicas of a replica set, and the apigate replicas of a
//! fleet, rotate at different moments instead of all at once (an epoch-aligned bucket
//! made every apigate replica drop every upstream connection at the same instant).
//!
//! State is keyed by replica address and material fingerprint and outlives snapshots,
//! so a reload that leaves a route's upstream material alone keeps its connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::weak_map::WeakMap;
use std::time::{Duration, SystemTime};

use rand::Rng;

/// Which pool: the front-proxy identity is presented only for verified client
/// certificates, so the two never share a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Identity {
    /// No client certificate (token and anonymous requests).
    Anonymous,
    /// The front-proxy certificate.
    FrontProxy,
}

/// The two pool generations of one replica for one set of upstream material.
#[derive(Debug)]
pub struct BackendPools {
    fingerprint: u64,
    anonymous: Generation,
    front_proxy: Generation,
}

#[derive(Debug, Default)]
struct Generation {
    /// Random id of the current generation; 0 before first use.
    id: AtomicU64,
    /// When it ends, in [`crate::balance::health::now_nanos`] time.
    ends: AtomicU64,
}

/// When a generation ends, given its start: a jittered age, capped at `not_after`
/// (`None`: no certificate). A certificate already expired caps nothing: rotating on
/// every request would only multiply connections made with the same expired material.
pub fn generation_end(
    start: u64,
    max_age: Duration,
    jitter: f64,
    not_after_in: Option<Duration>,
) -> u64 {
    let factor = 0.9 + 0.1 * jitter.clamp(0.0, 1.0);
    let age = nanos(max_age.mul_f64(factor));
    let by_age = start.saturating_add(age);
    match not_after_in {
        Some(left) if !left.is_zero() => by_age.min(start.saturating_add(nanos(left))),
        _ => by_age,
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl BackendPools {
    /// The pool key for a request at `now` (nanos): the current generation, or a new one
    /// when it has ended.
    pub fn key(
        &self,
        identity: Identity,
        now: u64,
        max_age: Duration,
        not_after: Option<SystemTime>,
    ) -> u64 {
        let generation = match identity {
            Identity::Anonymous => &self.anonymous,
            Identity::FrontProxy => &self.front_proxy,
        };
        let id = generation.id.load(Ordering::Acquire);
        if id != 0 && now < generation.ends.load(Ordering::Acquire) {
            return self.mix(identity, id);
        }
        let mut rng = rand::thread_rng();
        let fresh = rng.gen::<u64>() | 1;
        let left = not_after.map(|t| {
            t.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        });
        // Whoever wins the swap starts the generation; the others use it.
        match generation
            .id
            .compare_exchange(id, fresh, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                let end = generation_end(now, max_age, rng.gen::<f64>(), left);
                generation.ends.store(end, Ordering::Release);
                self.mix(identity, fresh)
            }
            Err(current) => self.mix(identity, current),
        }
    }

    fn mix(&self, identity: Identity, id: u64) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.fingerprint.hash(&mut hasher);
        identity.hash(&mut hasher);
        id.hash(&mut hasher);
        hasher.finish()
    }
}

/// Hands out one [`BackendPools`] per (replica, material) while any snapshot uses it.
#[derive(Debug, Default)]
pub struct PoolRegistry {
    pools: Mutex<WeakMap<(SocketAddr, u64), BackendPools>>,
}

impl PoolRegistry {
    /// The pools of `addr` for the material with `fingerprint`.
    pub fn get(&self, addr: SocketAddr, fingerprint: u64) -> Arc<BackendPools> {
        let mut pools = match self.pools.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(existing) = pools.get(&(addr, fingerprint)) {
            return existing;
        }
        let created = Arc::new(BackendPools {
            fingerprint,
            anonymous: Generation::default(),
            front_proxy: Generation::default(),
        });
        pools.insert((addr, fingerprint), &created);
        created
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_generation_lasts_a_jittered_age_capped_by_the_certificate() {
        assert_eq!(generation_end(0, HOUR, 1.0, None), 3600 * S);
        assert_eq!(generation_end(0, HOUR, 0.0, None), 3240 * S);
        // A certificate that expires sooner ends it sooner.
        assert_eq!(
            generation_end(10 * S, HOUR, 1.0, Some(Duration::from_secs(60))),
            70 * S
        );
        // An expired one does not shorten it to nothing.
        assert_eq!(generation_end(0, HOUR, 1.0, Some(Duration::ZERO)), 3600 * S);
    }

    #[test]
    fn keys_are_stable_within_a_generation_and_change_after_it() {
        let registry = PoolRegistry::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let pools = registry.get(addr, 7);
        let age = Duration::from_secs(10);
        let first = pools.key(Identity::FrontProxy, S, age, None);
        assert_eq!(pools.key(Identity::FrontProxy, 5 * S, age, None), first);
        assert_ne!(pools.key(Identity::Anonymous, 5 * S, age, None), first);
        // Past 100% of the age the generation has certainly ended.
        let next = pools.key(Identity::FrontProxy, 12 * S, age, None);
        assert_ne!(next, first);
        assert_eq!(pools.key(Identity::FrontProxy, 13 * S, age, None), next);
    }

    #[test]
    fn no_connection_is_reused_past_the_front_proxy_certificate() {
        let registry = PoolRegistry::default();
        let pools = registry.get("127.0.0.1:1".parse().unwrap(), 7);
        let expires = SystemTime::now() + Duration::from_secs(2);
        let first = pools.key(Identity::FrontProxy, S, HOUR, Some(expires));
        assert_eq!(
            pools.key(Identity::FrontProxy, 2 * S, HOUR, Some(expires)),
            first
        );
        assert_ne!(
            pools.key(Identity::FrontProxy, 4 * S, HOUR, Some(expires)),
            first
        );
    }

    #[test]
    fn pools_are_shared_per_replica_and_material() {
        let registry = PoolRegistry::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let a = registry.get(addr, 1);
        assert!(Arc::ptr_eq(&a, &registry.get(addr, 1)));
        assert!(!Arc::ptr_eq(&a, &registry.get(addr, 2)));
    }
}
