//! Admitted connections by route, so that a new configuration re-checks only the
//! connections it may have revoked: those of removed routes, and of routes whose access
//! policy may now deny an address it allowed. Nothing runs per connection between
//! configurations; a swap touches only the routes its diff names.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use apigate_control::RouteId;

use super::KillSwitch;

/// One admitted connection, as a revocation check needs it.
struct Entry {
    listener: Arc<str>,
    direct: IpAddr,
    remote: IpAddr,
    kill: Weak<KillSwitch>,
}

/// A connection closed by [`Connections::revoke`], for the caller's metric and log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The listener it came through.
    pub listener: Arc<str>,
    /// The client address its admission was decided on.
    pub remote: IpAddr,
    /// Why (`route_removed`, `acl_revoked`).
    pub reason: &'static str,
}

/// The admitted connections of every route.
#[derive(Default)]
pub struct Connections {
    routes: Mutex<HashMap<RouteId, HashMap<u64, Entry>>>,
    next: AtomicU64,
}

impl Connections {
    fn lock(&self) -> MutexGuard<'_, HashMap<RouteId, HashMap<u64, Entry>>> {
        match self.routes.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Register a connection of `route`; it stays registered until the returned
    /// [`Registration`] is dropped (with the connection). Register *before* checking
    /// the connection against the current configuration: a swap then either finds it
    /// here or is already visible to that check.
    pub fn register(
        self: &Arc<Self>,
        route: RouteId,
        listener: Arc<str>,
        direct: IpAddr,
        remote: IpAddr,
    ) -> (Arc<KillSwitch>, Registration) {
        let kill = Arc::new(KillSwitch::default());
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().entry(route.clone()).or_default().insert(
            id,
            Entry {
                listener,
                direct,
                remote,
                kill: Arc::downgrade(&kill),
            },
        );
        let registration = Registration {
            connections: self.clone(),
            route,
            id,
        };
        (kill, registration)
    }

    /// Close every connection of `route` for which `verdict(direct, remote)` gives a
    /// reason; returns them.
    pub fn revoke(
        &self,
        route: &RouteId,
        verdict: impl Fn(IpAddr, IpAddr) -> Option<&'static str>,
    ) -> Vec<Revoked> {
        let mut routes = self.lock();
        let Some(entries) = routes.get_mut(route) else {
            return Vec::new();
        };
        let mut revoked = Vec::new();
        entries.retain(|_, entry| {
            let Some(reason) = verdict(entry.direct, entry.remote) else {
                return true;
            };
            if let Some(kill) = entry.kill.upgrade() {
                kill.trip();
                revoked.push(Revoked {
                    listener: entry.listener.clone(),
                    remote: entry.remote,
                    reason,
                });
            }
            false
        });
        revoked
    }

    /// Connections registered now.
    pub fn len(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }

    /// Whether none is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keeps a connection registered; dropping it (with the connection) unregisters it.
pub struct Registration {
    connections: Arc<Connections>,
    route: RouteId,
    id: u64,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("route", &self.route)
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut routes = self.connections.lock();
        if let Some(entries) = routes.get_mut(&self.route) {
            entries.remove(&self.id);
            if entries.is_empty() {
                routes.remove(&self.route);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str) -> RouteId {
        RouteId {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_revocation_closes_only_the_connections_its_verdict_names_on_its_route() {
        let connections = Arc::new(Connections::default());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let (a1, _r1) =
            connections.register(route("a"), "https".into(), ip("10.0.0.1"), ip("10.0.0.1"));
        let (a2, _r2) =
            connections.register(route("a"), "https".into(), ip("10.0.0.2"), ip("10.0.0.2"));
        let (b1, _r3) =
            connections.register(route("b"), "https".into(), ip("10.0.0.1"), ip("10.0.0.1"));
        assert_eq!(connections.len(), 3);
        let revoked = connections.revoke(&route("a"), |_, remote| {
            (remote == ip("10.0.0.1")).then_some("acl_revoked")
        });
        assert_eq!(
            revoked,
            vec![Revoked {
                listener: "https".into(),
                remote: ip("10.0.0.1"),
                reason: "acl_revoked"
            }]
        );
        assert!(a1.is_tripped());
        assert!(!a2.is_tripped(), "allowed: kept");
        assert!(!b1.is_tripped(), "another route: untouched");
        // A revoked connection is not counted again at the next swap.
        assert_eq!(connections.len(), 2);
        assert!(
            connections
                .revoke(&route("a"), |_, _| Some("route_removed"))
                .len()
                == 1
        );
        assert!(a2.is_tripped());
    }

    #[test]
    fn a_connection_unregisters_when_it_ends() {
        let connections = Arc::new(Connections::default());
        let ip: IpAddr = "::1".parse().unwrap();
        let (kill, registration) = connections.register(route("a"), "https".into(), ip, ip);
        drop(registration);
        assert!(connections.is_empty());
        assert!(connections
            .revoke(&route("a"), |_, _| Some("route_removed"))
            .is_empty());
        assert!(!kill.is_tripped());
    }
}
