//! TLS session resumption state: one bounded store for every route's server config,
//! and a small cache per upstream client config.
//!
//! rustls gives each config its own 256-entry cache, allocated up front: about 33 KiB
//! per terminating route whether or not any client resumes (kube clients rarely do),
//! 160 MiB at 5,000 routes, and up to 5,000 × 256 stored sessions. apigate instead
//! keeps one store for the process, bounded as a whole, like HAProxy's shared cache.
//! Each server config gets its own scope in it, so a session resumes only on the
//! config that issued it: never on another route, nor on a route's next config (a
//! client CA removed from a route cannot be bypassed by resuming).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use rustls::client::{ClientSessionMemoryCache, Resumption};
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};

/// Sessions held for all routes together; the oldest is dropped first.
const SERVER_SESSIONS: usize = 8192;

/// TLS 1.3 tickets an upstream client config keeps: one server name (a route's
/// upstream server name) with up to 8 tickets.
const UPSTREAM_TICKETS: usize = 8;

static SHARED: LazyLock<Arc<ServerSessionMemoryCache>> = LazyLock::new(new_store);

/// A store of the shared store's size.
fn new_store() -> Arc<ServerSessionMemoryCache> {
    ServerSessionMemoryCache::new(SERVER_SESSIONS)
}

static NEXT_SCOPE: AtomicU64 = AtomicU64::new(0);

/// One server config's part of the shared store: its keys carry the scope.
#[derive(Debug)]
struct Scoped {
    scope: [u8; 8],
    shared: Arc<ServerSessionMemoryCache>,
}

impl Scoped {
    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut scoped = Vec::with_capacity(self.scope.len() + key.len());
        scoped.extend_from_slice(&self.scope);
        scoped.extend_from_slice(key);
        scoped
    }
}

impl StoresServerSessions for Scoped {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.shared.put(self.key(&key), value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.shared.get(&self.key(key))
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.shared.take(&self.key(key))
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// A new scope of the shared store, for one server config.
pub(super) fn server_store() -> Arc<dyn StoresServerSessions + Send + Sync> {
    scope_of(&SHARED)
}

/// A new scope of `shared`.
fn scope_of(shared: &Arc<ServerSessionMemoryCache>) -> Arc<dyn StoresServerSessions + Send + Sync> {
    let scope = NEXT_SCOPE.fetch_add(1, Ordering::Relaxed);
    Arc::new(Scoped {
        scope: scope.to_be_bytes(),
        shared: shared.clone(),
    })
}

/// Resumption for one upstream client config: its own few tickets, never another
/// route's (every route names its replicas alike, `kubernetes.default.svc`).
pub(super) fn upstream_resumption() -> Resumption {
    Resumption::store(Arc::new(ClientSessionMemoryCache::new(UPSTREAM_TICKETS)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_resumes_only_in_the_scope_that_stored_it() {
        let (a, b) = (server_store(), server_store());
        assert!(a.put(b"id".to_vec(), b"session".to_vec()));
        assert_eq!(a.get(b"id").as_deref(), Some(&b"session"[..]));
        assert_eq!(b.get(b"id"), None);
        assert_eq!(b.take(b"id"), None);
        assert_eq!(a.take(b"id").as_deref(), Some(&b"session"[..]));
        assert_eq!(a.get(b"id"), None);
    }

    #[test]
    fn the_store_is_bounded_for_all_scopes_together_oldest_first() {
        // A store like the shared one; filling the shared one would evict other tests'.
        let store = new_store();
        let (a, b) = (scope_of(&store), scope_of(&store));
        a.put(b"first".to_vec(), b"s".to_vec());
        for i in 0..SERVER_SESSIONS {
            b.put(i.to_be_bytes().to_vec(), b"s".to_vec());
        }
        assert_eq!(
            a.get(b"first"),
            None,
            "dropped to make room for another scope's"
        );
        assert!(b.get(&(SERVER_SESSIONS - 1).to_be_bytes()).is_some());
    }
}
