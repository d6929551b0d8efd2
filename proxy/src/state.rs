//! The proxy's view of the active configuration, swapped atomically.
//!
//! [`Active`] pairs a control-plane [`Snapshot`] with what the proxy derives from it once
//! per swap (backend states, pingora's upstream TLS material). It is published through a
//! single `ArcSwap`, loaded once per connection and once per request: no reader ever
//! sees two halves of different configurations.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use apigate_control::{Route, RouteId, Snapshot, SnapshotDiff};
use arc_swap::ArcSwap;
use pingora::utils::tls::{CertKey, WrappedX509};

use crate::balance::health::{now_nanos, FailureOutcome};
use crate::balance::{BackendRegistry, BackendState, RouteBackends};
use crate::metrics::Metrics;
use apigate_control::snapshot::Ejection;

/// One route with everything the proxy derived from it.
pub struct RouteRuntime {
    /// The compiled route.
    pub route: Arc<Route>,
    /// Its backends' shared states and balancing policy.
    pub backends: RouteBackends,
    /// Upstream TLS in pingora's form (terminate mode), built once per swap rather
    /// than per connection.
    pub upstream: Option<UpstreamPeerTls>,
    /// rustls client configs for upgrades, which apigate forwards itself.
    pub upgrade_tls: Option<UpgradeTls>,
    /// The route id as a metric label.
    pub label: String,
}

/// Upstream TLS material of a terminating route, in pingora's types.
pub struct UpstreamPeerTls {
    /// Trust anchors for the replicas' serving certificates.
    pub ca: Arc<[WrappedX509]>,
    /// Front-proxy client certificate.
    pub front_proxy: Option<Arc<CertKey>>,
}

/// Client configs for upgraded requests: one without and one with the front-proxy
/// certificate, mirroring the two pools of the pooled path.
pub struct UpgradeTls {
    /// For token and anonymous requests.
    pub anonymous: Arc<rustls::ClientConfig>,
    /// For verified client certificates.
    pub identity: Option<Arc<rustls::ClientConfig>>,
}

fn upgrade_tls(upstream: &apigate_control::snapshot::UpstreamTls) -> Option<UpgradeTls> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in &upstream.ca {
        roots.add(cert.clone()).ok()?;
    }
    let builder = || {
        rustls::ClientConfig::builder_with_provider(apigate_control::compile::provider())
            .with_safe_default_protocol_versions()
            .ok()
            .map(|b| b.with_root_certificates(roots.clone()))
    };
    let finish = |mut config: rustls::ClientConfig| {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    };
    let anonymous = finish(builder()?.with_no_client_auth());
    let identity = match &upstream.front_proxy {
        None => None,
        Some(id) => {
            let key = rustls::pki_types::PrivateKeyDer::try_from(id.key_der.clone()).ok()?;
            Some(finish(
                builder()?
                    .with_client_auth_cert(id.chain.clone(), key)
                    .ok()?,
            ))
        }
    };
    Some(UpgradeTls {
        anonymous,
        identity,
    })
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
    revisions: tokio::sync::watch::Sender<u64>,
    /// Backend states shared across snapshots.
    pub backends: BackendRegistry,
    /// Metrics.
    pub metrics: Metrics,
}

impl State {
    /// Start serving `snapshot` as revision 1.
    pub fn new(snapshot: Snapshot, metrics: Metrics) -> Arc<Self> {
        let backends = BackendRegistry::default();
        let active = build(Arc::new(snapshot), 1, &backends, None);
        let state = Arc::new(State {
            active: ArcSwap::from_pointee(active),
            revision: AtomicU64::new(1),
            revisions: tokio::sync::watch::channel(1).0,
            backends,
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
    /// the `Arc` they loaded; nothing is closed.
    pub fn install(&self, snapshot: Snapshot) -> SnapshotDiff {
        let old = self.load();
        let diff = snapshot.diff(&old.snapshot);
        let revision = self.revision.fetch_add(1, Ordering::Relaxed) + 1;
        let active = build(Arc::new(snapshot), revision, &self.backends, Some(&old));
        self.active.store(Arc::new(active));
        self.record_swap();
        self.revisions.send_replace(revision);
        diff
    }

    /// Notified after every swap (connections re-check their permission).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revisions.subscribe()
    }

    fn record_swap(&self) {
        let active = self.load();
        let revision = i64::try_from(active.revision).unwrap_or(i64::MAX);
        self.metrics.config_revision.set(revision);
        self.metrics
            .routes
            .set(i64::try_from(active.routes.len()).unwrap_or(i64::MAX));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        self.metrics.config_last_success.set(now);
    }

    /// A backend failed a request of `route` (connect failure or gateway error): count
    /// it, and eject the backend when the failure streak reaches the policy's limit.
    /// The one place that turns failures into ejections, for every path.
    pub fn backend_failed(
        &self,
        route: &str,
        backend: &BackendState,
        policy: &Ejection,
        connect_failure: bool,
    ) {
        if connect_failure {
            self.metrics
                .upstream_connect_errors
                .with_label_values(&[route, backend.label.as_str()])
                .inc();
        }
        if let FailureOutcome::Ejected(duration) =
            backend.health.record_failure(now_nanos(), policy)
        {
            self.metrics
                .ejections
                .with_label_values(&[backend.label.as_str()])
                .inc();
            tracing::warn!(
                backend = %backend.addr,
                route,
                ejected_for_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                "backend ejected after consecutive failures"
            );
        }
    }

    /// Copy live backend counters into the gauges, just before a scrape.
    pub fn refresh_gauges(&self) {
        let active = self.load();
        let now = crate::balance::health::now_nanos();
        self.metrics.in_flight.reset();
        self.metrics.ejected.reset();
        for runtime in &active.routes {
            for backend in &runtime.backends.states {
                let labels = [runtime.label.as_str(), backend.label.as_str()];
                let set = |kind: &str, v: u64| {
                    self.metrics
                        .in_flight
                        .with_label_values(&[labels[0], labels[1], kind])
                        .set(i64::try_from(v).unwrap_or(i64::MAX));
                };
                set("ordinary", backend.in_flight());
                set("long_running", backend.long_running());
                self.metrics
                    .ejected
                    .with_label_values(&[backend.label.as_str()])
                    .set(i64::from(backend.health.ejected(now)));
            }
        }
    }
}

/// Derive the proxy's view of `snapshot`. A route that is the very same `Arc` as in
/// `previous` (compile reused it because nothing it depends on changed) keeps its
/// runtime: thousands of unchanged routes cost nothing on a swap.
fn build(
    snapshot: Arc<Snapshot>,
    revision: u64,
    registry: &BackendRegistry,
    previous: Option<&Active>,
) -> Active {
    let routes = snapshot
        .routes
        .iter()
        .map(|route| {
            if let Some(old) = previous
                .and_then(|p| p.route(&route.id))
                .filter(|old| Arc::ptr_eq(&old.route, route))
            {
                return old.clone();
            }
            // Compile has parsed every certificate and checked the key, so pingora's
            // constructors (which panic on bad input) only ever see good material.
            let upstream = route.terminate.as_ref().map(|t| {
                let ca: Vec<WrappedX509> = t
                    .upstream
                    .ca
                    .iter()
                    .map(|der| WrappedX509::new(der.to_vec(), pingora::utils::tls::parse_x509))
                    .collect();
                let front_proxy = t.upstream.front_proxy.as_ref().map(|id| {
                    Arc::new(CertKey::new(
                        id.chain.iter().map(|c| c.to_vec()).collect(),
                        id.key_der.clone(),
                    ))
                });
                UpstreamPeerTls {
                    ca: Arc::from(ca.into_boxed_slice()),
                    front_proxy,
                }
            });
            let upgrade_tls = route
                .terminate
                .as_ref()
                .and_then(|t| upgrade_tls(&t.upstream));
            Arc::new(RouteRuntime {
                upgrade_tls,
                backends: RouteBackends::new(&route.backends, route.balancing, registry),
                upstream,
                label: route.id.to_string(),
                route: route.clone(),
            })
        })
        .collect();
    Active {
        snapshot,
        routes,
        revision,
    }
}
