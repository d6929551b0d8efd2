//! The proxy's view of the active configuration, swapped atomically.
//!
//! [`Active`] pairs a control-plane [`Snapshot`] with what the proxy derives from it once
//! per swap (each route's upstream side and engine TLS material). It is published
//! through a single `ArcSwap`, loaded once per connection and once per request: no
//! reader ever sees two halves of different configurations.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use apigate_control::{pair_by_id, Paired, Route, RouteId, Snapshot, SnapshotDiff};
use arc_swap::ArcSwap;

use crate::access_log::AccessLog;
use crate::balance::{BackendRegistry, Load};
use crate::conn::limits::SourceCounts;
use crate::conn::registry::Connections;
use crate::flow::limiter::RouteFlow;
use crate::flow::FlowRegistry;
use crate::metrics::Metrics;
use crate::peer_tls::PeerTls;
use crate::probe::{ProbeRegistry, Prober};
use crate::upstream::pool::PoolRegistry;
use crate::upstream::RouteUpstream;

/// One route with everything the proxy derived from it: the one runtime object every
/// path of a connection or request works from.
pub struct RouteRuntime {
    /// The compiled route (its mode carries its TLS material).
    pub route: Arc<Route>,
    /// Its replicas, pools and settings: what the forwarding core works with.
    pub upstream: Arc<RouteUpstream>,
    /// Upstream TLS in the HTTP engine's form (terminate mode).
    pub peer_tls: Option<PeerTls>,
    /// The route id as a metric label.
    pub label: Arc<str>,
    /// Its flow-control state (`None` when the route limits nothing), kept across
    /// configurations.
    pub flow: Option<Arc<RouteFlow>>,
    /// Active-check probers, aligned with `upstream.backends.states` (`None` where the
    /// route does not probe). The probe registry keeps them running while the active
    /// configuration uses them; a request under an older one finds them gone.
    probers: Vec<Option<Weak<Prober>>>,
}

impl RouteRuntime {
    /// The prober of the replica at `index`, if the route probes and it runs.
    pub fn prober(&self, index: usize) -> Option<Arc<Prober>> {
        self.probers.get(index)?.as_ref()?.upgrade()
    }

    /// The probers of all its replicas that run.
    pub fn probers(&self) -> impl Iterator<Item = Arc<Prober>> + '_ {
        self.probers.iter().flatten().filter_map(Weak::upgrade)
    }
}

/// The active configuration as the proxy serves it.
pub struct Active {
    /// The compiled configuration.
    pub snapshot: Arc<Snapshot>,
    /// Runtimes aligned with `snapshot.routes`.
    pub routes: Vec<Arc<RouteRuntime>>,
    /// Increases with every swap.
    pub revision: u64,
}

impl Active {
    /// The route runtime selected by a TLS server name.
    pub fn route_for_sni(&self, sni: &str) -> Option<&Arc<RouteRuntime>> {
        let route = self.snapshot.route_for_sni(sni)?;
        self.route(&route.id)
    }

    /// The route runtime a CONNECT destination names.
    pub fn route_for_destination(&self, destination: &str) -> Option<&Arc<RouteRuntime>> {
        let route = self.snapshot.route_for_destination(destination)?;
        self.route(&route.id)
    }

    /// The probers its routes use.
    fn probers(&self) -> impl Iterator<Item = Arc<Prober>> + '_ {
        self.routes.iter().flat_map(|r| r.probers())
    }

    /// The route runtime with this id.
    pub fn route(&self, id: &RouteId) -> Option<&Arc<RouteRuntime>> {
        self.routes
            .binary_search_by(|r| r.route.id.cmp(id))
            .ok()
            .and_then(|i| self.routes.get(i))
    }
}

/// Shared proxy state: the active configuration plus everything that outlives it.
pub struct State {
    active: ArcSwap<Active>,
    revision: AtomicU64,
    /// Admitted connections by route, re-checked at each swap that may revoke them.
    pub connections: Arc<Connections>,
    /// Open connections by client address (`connections.maxPerSource`).
    pub sources: Arc<SourceCounts>,
    draining: AtomicBool,
    /// Backend states shared across snapshots.
    pub backends: BackendRegistry,
    /// Upstream pool generations shared across snapshots.
    pub pools: PoolRegistry,
    /// Active-check probers shared across snapshots.
    pub probes: ProbeRegistry,
    /// Flow-control states shared across snapshots.
    pub flows: FlowRegistry,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The access log's buffer and writer (written only while the configuration turns
    /// it on).
    pub access_log: AccessLog,
}

impl State {
    /// Start serving `snapshot` as revision 1.
    pub fn new(snapshot: Snapshot, metrics: Metrics) -> Arc<Self> {
        let metrics = Arc::new(metrics);
        let backends = BackendRegistry::default();
        let pools = PoolRegistry::default();
        let probes = ProbeRegistry::on_own_thread(metrics.clone());
        let flows = FlowRegistry::default();
        let registries = Registries {
            backends: &backends,
            pools: &pools,
            probes: &probes,
            flows: &flows,
        };
        let active = build(Arc::new(snapshot), 1, &registries, &metrics, None);
        probes.hold(active.probers());
        let state = Arc::new(State {
            active: ArcSwap::from_pointee(active),
            revision: AtomicU64::new(1),
            connections: Arc::default(),
            sources: Arc::default(),
            draining: AtomicBool::new(false),
            backends,
            pools,
            probes,
            flows,
            access_log: AccessLog::start(&metrics),
            metrics,
        });
        state.record_swap();
        state
    }

    /// The active configuration; hold the returned `Arc` for the whole connection or
    /// request so every decision in it uses the same configuration.
    pub fn load(&self) -> Arc<Active> {
        self.active.load_full()
    }

    /// Replace the active configuration. Open connections and in-flight requests keep
    /// the `Arc` they loaded; only connections it no longer allows are closed.
    pub fn install(&self, snapshot: Snapshot) -> SnapshotDiff {
        let old = self.load();
        let diff = snapshot.diff(&old.snapshot);
        let revision = self.revision.fetch_add(1, Ordering::Relaxed) + 1;
        let registries = Registries {
            backends: &self.backends,
            pools: &self.pools,
            probes: &self.probes,
            flows: &self.flows,
        };
        let active = build(
            Arc::new(snapshot),
            revision,
            &registries,
            &self.metrics,
            Some(&old),
        );
        let probers: Vec<_> = active.probers().collect();
        let active = Arc::new(active);
        self.active.store(active.clone());
        self.probes.hold(probers);
        self.record_swap();
        self.revoke(&old, &active);
        diff
    }

    /// Close the connections `new` no longer allows: those of routes it removed, of
    /// routes that no longer serve a name (hostname or CONNECT destination) they had,
    /// of routes whose access policy may deny an address `old` allowed, and the
    /// certificate-authenticated ones of routes whose client CAs changed, when their
    /// chain no longer verifies. Connections
    /// of other routes are not looked at.
    fn revoke(&self, old: &Active, new: &Active) {
        let pairs = pair_by_id(&old.routes, &new.routes, |r| &r.route, |r| &r.route);
        for (before, after) in pairs.filter_map(|pair| match pair {
            Paired::Old(before) => Some((before, None)),
            Paired::Both(before, after) => Some((before, Some(&after.route))),
            Paired::New(_) => None,
        }) {
            let id = &before.route.id;
            if let Some(after) = after {
                let names_kept = before
                    .route
                    .hostnames
                    .iter()
                    .all(|h| after.hostnames.contains(h))
                    && before
                        .route
                        .destinations
                        .iter()
                        .all(|d| after.destinations.contains(d));
                let client_cas = |r: &Route| r.terminate().map(|t| t.client_ca_fingerprint);
                if Arc::ptr_eq(after, &before.route)
                    || (names_kept
                        && !after.access.may_tighten(&before.route.access)
                        && client_cas(after) == client_cas(&before.route))
                {
                    continue;
                }
            }
            let revoked = self
                .connections
                .revoke(id, |client| client.revoked_by(after.map(|r| &**r)));
            for closed in revoked {
                self.metrics
                    .revoked
                    .with_label_values(&[&*closed.listener, closed.reason])
                    .inc();
                tracing::info!(listener = %closed.listener, route = %id, client = %closed.remote, reason = closed.reason, "closing connection after configuration change");
            }
        }
    }

    /// Shutdown has begun: HTTP/1.1 responses close their connections from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    fn record_swap(&self) {
        let active = self.load();
        let revision = i64::try_from(active.revision).unwrap_or(i64::MAX);
        self.metrics.config_revision.set(revision);
        self.metrics
            .routes
            .set(i64::try_from(active.routes.len()).unwrap_or(i64::MAX));
        self.metrics
            .config_last_success
            .set(unix_seconds(SystemTime::now()));
    }

    /// Copy live in-flight counters and the certificates' expiry into the gauges, just
    /// before a scrape.
    pub fn refresh_gauges(&self) {
        let active = self.load();
        let metrics = &self.metrics;
        metrics.certificate_expiry.reset();
        for runtime in &active.routes {
            let Some(terminate) = runtime.route.terminate() else {
                continue;
            };
            for (certificate, _, at) in terminate.expiry.each() {
                metrics
                    .certificate_expiry
                    .with_label_values(&[&*runtime.label, certificate])
                    .set(unix_seconds(at));
            }
        }
        metrics.flow_queued.reset();
        metrics.flow_in_flight.reset();
        metrics.flow_top_share.reset();
        for runtime in &active.routes {
            let Some(flow) = &runtime.flow else {
                continue;
            };
            let (queued, in_flight) = flow.load();
            let label = &*runtime.label;
            metrics
                .flow_queued
                .with_label_values(&[label])
                .set(i64::from(queued));
            metrics
                .flow_in_flight
                .with_label_values(&[label])
                .set(i64::from(in_flight));
            for (rank, (_, share)) in flow.top_clients(TOP_CLIENTS).into_iter().enumerate() {
                let rank = RANKS.get(rank).copied().unwrap_or("other");
                metrics
                    .flow_top_share
                    .with_label_values(&[label, rank])
                    .set(share);
            }
        }
        metrics.in_flight.reset();
        for runtime in &active.routes {
            for backend in &runtime.upstream.backends.states {
                for load in [Load::Ordinary, Load::LongRunning, Load::Connection] {
                    metrics
                        .in_flight
                        .with_label_values(&[&*runtime.label, backend.label.as_str(), load.label()])
                        .set(i64::try_from(backend.in_flight(load)).unwrap_or(i64::MAX));
                }
            }
        }
    }
}

/// Busiest clients per route whose share is exported (by rank, never by name).
const TOP_CLIENTS: usize = 3;
const RANKS: [&str; TOP_CLIENTS] = ["1", "2", "3"];

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Warn, once per configuration that brings a route in, about its certificates that
/// expire soon (the metric and the alert rules keep watching).
fn warn_if_expiring(route: &Route) {
    let Some(terminate) = route.terminate() else {
        return;
    };
    let now = SystemTime::now();
    for (certificate, field, at) in terminate.expiry.expiring(now) {
        let expired = at <= now;
        tracing::warn!(route = %route.id, certificate, field, not_after = %humantime::format_rfc3339_seconds(at), expired, "certificate expires within 14 days or has expired");
    }
}

/// The state that outlives snapshots, which a new snapshot's runtimes resolve to.
struct Registries<'a> {
    backends: &'a BackendRegistry,
    pools: &'a PoolRegistry,
    probes: &'a ProbeRegistry,
    flows: &'a FlowRegistry,
}

/// Derive the proxy's view of `snapshot`. A route that is the very same `Arc` as in
/// `previous` (compile reused it because nothing it depends on changed) keeps its
/// runtime: thousands of unchanged routes cost nothing on a swap.
fn build(
    snapshot: Arc<Snapshot>,
    revision: u64,
    registries: &Registries<'_>,
    metrics: &Arc<Metrics>,
    previous: Option<&Active>,
) -> Active {
    let runtime = |route: &Arc<Route>| {
        warn_if_expiring(route);
        let upstream = RouteUpstream::new(
            route,
            registries.backends,
            registries.pools,
            metrics.clone(),
        );
        let probers = registries
            .probes
            .for_route(route, &upstream.backends.states);
        let flow = route
            .flow_control
            .as_ref()
            .map(|_| registries.flows.for_route(&route.id));
        Arc::new(RouteRuntime {
            flow,
            probers,
            peer_tls: route.terminate().map(|t| PeerTls::new(&t.upstream)),
            label: upstream.label.clone(),
            upstream: Arc::new(upstream),
            route: route.clone(),
        })
    };
    // A route the previous configuration built from the same compiled route is kept.
    let before: &[Arc<RouteRuntime>] = previous.map_or(&[], |p| &p.routes);
    let routes = pair_by_id(before, &snapshot.routes, |r| &r.route, |r| r)
        .filter_map(|pair| match pair {
            Paired::Old(_) => None,
            Paired::New(route) => Some(runtime(route)),
            Paired::Both(old, route) if Arc::ptr_eq(&old.route, route) => Some(old.clone()),
            Paired::Both(_, route) => Some(runtime(route)),
        })
        .collect();
    Active {
        snapshot,
        routes,
        revision,
    }
}
