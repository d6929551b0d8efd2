//! Admitted connections by route, so that a new configuration re-checks only the
//! connections it may have revoked: those of removed routes, of routes that no longer
//! serve the name a connection was routed by, and of routes whose access policy may now
//! deny an address it allowed. Nothing runs per connection between configurations; a
//! swap touches only the routes that changed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use apigate_control::{Route, RouteId};
use rustls::pki_types::{CertificateDer, UnixTime};

use super::limits::SourceSlot;
use super::KillSwitch;

/// The name that routed a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutedBy {
    /// The TLS server name (lowercase).
    Sni(Arc<str>),
    /// The CONNECT destination (trimmed, lowercase).
    Destination(Arc<str>),
}

/// An admitted connection as a revocation check sees it.
#[derive(Debug, Clone)]
pub struct Client {
    /// The TCP peer.
    pub direct: IpAddr,
    /// The client address its admission was decided on (PROXY header, else the peer).
    pub remote: IpAddr,
    /// The name that selected its route.
    pub routed_by: RoutedBy,
    /// The client certificate chain the route's client CAs verified (terminate mode,
    /// after the handshake): re-verified when the route's client CAs change.
    pub client_chain: Option<Arc<[CertificateDer<'static>]>>,
}

impl Client {
    /// Why `route` (as the active configuration has it; `None`: removed) no longer
    /// allows this connection, if it doesn't: the one rule both admission and every
    /// later swap apply.
    pub fn revoked_by(&self, route: Option<&Route>) -> Option<&'static str> {
        let Some(route) = route else {
            return Some("route_removed");
        };
        let serves = match &self.routed_by {
            RoutedBy::Sni(name) => route.hostnames.iter().any(|h| **h == **name),
            RoutedBy::Destination(name) => route.destinations.iter().any(|d| **d == **name),
        };
        if !serves {
            return Some("name_removed");
        }
        let decision = route.access.decide(self.direct, self.remote);
        if !decision.allowed() {
            return Some("acl_revoked");
        }
        let chain = self.client_chain.as_deref()?;
        let verifier = route.terminate().and_then(|t| t.client_verifier.as_ref());
        let still_verified = match (chain.split_first(), verifier) {
            (Some((leaf, intermediates)), Some(verifier)) => verifier
                .verify_client_cert(leaf, intermediates, UnixTime::now())
                .is_ok(),
            _ => false,
        };
        (!still_verified).then_some("client_ca_removed")
    }
}

/// One admitted connection, as a revocation check needs it.
struct Entry {
    listener: Arc<str>,
    client: Client,
    kill: Weak<KillSwitch>,
}

/// A connection closed by [`Connections::revoke`], for the caller's metric and log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The listener it came through.
    pub listener: Arc<str>,
    /// The client address its admission was decided on.
    pub remote: IpAddr,
    /// Why (`route_removed`, `name_removed`, `acl_revoked`, `client_ca_removed`).
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

    /// Register a connection of `route`, unless the route has `max_per_route`
    /// registered already; it stays registered, and keeps `source` counted, until the
    /// returned [`Registration`] is dropped (with the connection). Register *before*
    /// checking the connection against the current configuration: a swap then either
    /// finds it here or is already visible to that check.
    pub fn register(
        self: &Arc<Self>,
        (route, listener): (RouteId, Arc<str>),
        client: Client,
        max_per_route: usize,
        source: Option<SourceSlot>,
    ) -> Option<(Arc<KillSwitch>, Registration)> {
        let kill = Arc::new(KillSwitch::default());
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut routes = self.lock();
        let entries = routes.entry(route.clone()).or_default();
        if entries.len() >= max_per_route {
            return None;
        }
        entries.insert(
            id,
            Entry {
                listener,
                client,
                kill: Arc::downgrade(&kill),
            },
        );
        drop(routes);
        let registration = Registration {
            connections: self.clone(),
            route,
            id,
            _source: source,
        };
        Some((kill, registration))
    }

    /// Close every connection of `route` for which `verdict` gives a reason; returns
    /// them.
    pub fn revoke(
        &self,
        route: &RouteId,
        verdict: impl Fn(&Client) -> Option<&'static str>,
    ) -> Vec<Revoked> {
        let mut routes = self.lock();
        let Some(entries) = routes.get_mut(route) else {
            return Vec::new();
        };
        let mut revoked = Vec::new();
        entries.retain(|_, entry| {
            let Some(reason) = verdict(&entry.client) else {
                return true;
            };
            if let Some(kill) = entry.kill.upgrade() {
                kill.trip();
                revoked.push(Revoked {
                    listener: entry.listener.clone(),
                    remote: entry.client.remote,
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
    _source: Option<SourceSlot>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("route", &self.route)
            .field("id", &self.id)
            .finish()
    }
}

impl Registration {
    /// The handshake verified `chain` against the route's client CAs: remember it, so a
    /// change of those CAs re-verifies this connection.
    pub fn verified(&self, chain: Arc<[CertificateDer<'static>]>) {
        let mut routes = self.connections.lock();
        if let Some(entry) = routes
            .get_mut(&self.route)
            .and_then(|e| e.get_mut(&self.id))
        {
            entry.client.client_chain = Some(chain);
        }
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

    fn client(ip: &str) -> Client {
        let ip: IpAddr = ip.parse().unwrap();
        Client {
            direct: ip,
            remote: ip,
            routed_by: RoutedBy::Sni("api.example.com".into()),
            client_chain: None,
        }
    }

    fn register(
        connections: &Arc<Connections>,
        name: &str,
        ip: &str,
    ) -> (Arc<KillSwitch>, Registration) {
        connections
            .register((route(name), "https".into()), client(ip), usize::MAX, None)
            .unwrap()
    }

    #[test]
    fn a_route_holds_at_most_its_cap_and_a_closed_connection_frees_its_slots() {
        let connections = Arc::new(Connections::default());
        let sources = Arc::new(super::super::limits::SourceCounts::default());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let register = |name: &str| {
            let slot = sources.hold(ip, usize::MAX);
            connections.register((route(name), "https".into()), client("10.0.0.1"), 2, slot)
        };
        let first = register("a").unwrap();
        let _second = register("a").unwrap();
        assert!(register("a").is_none(), "a third on the same route");
        let _other = register("b").expect("another route is not affected");
        assert_eq!(sources.open(ip), 3, "the refused one holds no source slot");
        drop(first);
        assert_eq!(
            sources.open(ip),
            2,
            "the source slot goes with the registration"
        );
        assert!(register("a").is_some(), "a slot was freed");
    }

    #[test]
    fn a_revocation_closes_only_the_connections_its_verdict_names_on_its_route() {
        let connections = Arc::new(Connections::default());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let (a1, _r1) = register(&connections, "a", "10.0.0.1");
        let (a2, _r2) = register(&connections, "a", "10.0.0.2");
        let (b1, _r3) = register(&connections, "b", "10.0.0.1");
        assert_eq!(connections.len(), 3);
        let revoked = connections.revoke(&route("a"), |c| {
            (c.remote == ip("10.0.0.1")).then_some("acl_revoked")
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
                .revoke(&route("a"), |_| Some("route_removed"))
                .len()
                == 1
        );
        assert!(a2.is_tripped());
    }

    #[test]
    fn a_connection_unregisters_when_it_ends() {
        let connections = Arc::new(Connections::default());
        let (kill, registration) = register(&connections, "a", "::1");
        drop(registration);
        assert!(connections.is_empty());
        assert!(connections
            .revoke(&route("a"), |_| Some("route_removed"))
            .is_empty());
        assert!(!kill.is_tripped());
    }
}
