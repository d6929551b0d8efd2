//! Prometheus metrics: everything an operator graphs or alerts on.
//!
//! One registry per process, owned by [`Metrics`]; the admin listener renders it. In-flight
//! gauges are filled from the balancer's own counters at scrape time, so the hot path
//! updates each count exactly once.

pub mod api;

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// All metrics apigate exports.
pub struct Metrics {
    registry: Registry,
    names: Vec<String>,
    /// Requests by kube-apiserver's verb, group and resource (no route label).
    pub api: api::ApiRequests,
    /// Unix time each certificate file a route holds stops working (a chain's earliest
    /// `notAfter`, a CA bundle's latest),
    /// by route and certificate (`serving`, `client_ca`, `upstream_ca`, `front_proxy`).
    pub certificate_expiry: GaugeVec,
    /// Requests flow control refused (429), by route, policy (`route` for the route's
    /// own cap) and reason (`rate`, `in_flight`, `watches`, `queue_full`,
    /// `queue_timeout`).
    pub flow_rejected: IntCounterVec,
    /// Time requests waited for a slot under a route's cap, by route (only those that
    /// waited).
    pub flow_wait: HistogramVec,
    /// Requests waiting for a slot, by route, read at scrape time.
    pub flow_queued: IntGaugeVec,
    /// Requests holding a slot under the route's cap, by route, read at scrape time.
    pub flow_in_flight: IntGaugeVec,
    /// Share of a route's recent requests (decaying, one-minute half-life) sent by its
    /// busiest clients, by route and rank (`1` to `3`): bounded, never user names.
    pub flow_top_share: GaugeVec,
    /// Access log lines by result (`written`, `dropped` because the buffer was full,
    /// `failed` to write).
    pub access_log_lines: IntCounterVec,
    /// Requests by route, backend and status code (`backend="none"` when none was chosen).
    pub requests: IntCounterVec,
    /// Ordinary-request latency by route (watches and upgrades are excluded: their
    /// duration is how long a client chose to stay, not how fast apigate was).
    pub request_duration: HistogramVec,
    /// In-flight work by route, backend and kind (`ordinary`, `long_running`,
    /// `connection`).
    pub in_flight: IntGaugeVec,
    /// Failed upstream attempts by route, backend and failure (`connect`,
    /// `connect_timeout`, `tls`, `not_processed`, `reset`, `reset_after_response`,
    /// `response_timeout`, `body_timeout`, `refused`).
    pub upstream_failures: IntCounterVec,
    /// Attempts retried on another backend, by route and the failure that caused it.
    pub retries: IntCounterVec,
    /// Upgraded and passthrough streams by route, kind (`upgrade`, `passthrough`) and how
    /// they ended (`closed`, `idle_timeout`, `revoked`, `error`).
    pub tunnels: IntCounterVec,
    /// Request heads the transport refused, by route and reason (`timeout`,
    /// `too_large`, `malformed`).
    pub head_refusals: IntCounterVec,
    /// HTTP/2 client connections closed with GOAWAY `ENHANCE_YOUR_CALM`, by route and
    /// reason (`rapid_reset`, `control_flood`).
    pub http2_abuse: IntCounterVec,
    /// HTTP/2 client connections closed because the client answered no PING, by route.
    pub keepalive_timeouts: IntCounterVec,
    /// Backend ejections by backend.
    pub ejections: IntCounterVec,
    /// A backend's health state: 1 for the state it is in, 0 for the others
    /// (`healthy`, `slow_start`, `ejected`, `probation`, `unready`, `draining`).
    pub backend_state: IntGaugeVec,
    /// A backend's share of new requests while it ramps up (slow start): 0 to 1.
    pub backend_weight: GaugeVec,
    /// Health state changes by the state entered.
    pub backend_transitions: IntCounterVec,
    /// Active probes by backend and result ([`crate::probe::check::Outcome::LABELS`]).
    pub probes: IntCounterVec,
    /// Active probe latency by result.
    pub probe_duration: HistogramVec,
    /// How long each backend's last probe took.
    pub probe_last_duration: GaugeVec,
    /// Picks made with no backend able to take requests (all tried anyway), by route.
    pub panic_mode: IntCounterVec,
    /// Downstream connections by listener and outcome (`accepted`, or why one was
    /// refused; see `crate::listener::record`).
    pub connections: IntCounterVec,
    /// Open downstream connections by listener.
    pub connections_open: IntGaugeVec,
    /// TLS handshake failures by listener, route (`none` when the ClientHello never
    /// arrived) and reason.
    pub tls_handshake_failures: IntCounterVec,
    /// Requests the proxy answered itself, by route and reason.
    pub rejections: IntCounterVec,
    /// Rollout phase: 1 for the phase it is in (`idle`, `baking`, `held`, `frozen`).
    pub rollout_phase: IntGaugeVec,
    /// Policy revision served, by group (`stable`; `canary` while canaries differ).
    pub rollout_revision: IntGaugeVec,
    /// Each gate's last value for the rollout in progress.
    pub rollout_gate_value: GaugeVec,
    /// Each gate's threshold.
    pub rollout_gate_threshold: GaugeVec,
    /// Rollout transitions (`started`, `promoted`, `frozen`, `aborted`, `resumed`,
    /// `held`, `extended`, `superseded`, `queued`, `tightened`).
    pub rollout_transitions: IntCounterVec,
    /// Connection admission by listener, route, result (`allowed`, `denied`), reason
    /// (`acl`, `acl_default`, `always_allowed`, `no_policy`, `untrusted_proxy_header`,
    /// `malformed_proxy_header`, `unknown_sni`, `no_sni`, `unknown_destination`,
    /// `bad_connect`) and address family.
    pub access: IntCounterVec,
    /// Open connections closed because a new configuration no longer allows them.
    pub revoked: IntCounterVec,
    /// Passthrough connections by route and backend.
    pub passthrough_connections: IntCounterVec,
    /// Config reloads by result (`success`, `failure`).
    pub reloads: IntCounterVec,
    /// Config errors in rejected reloads, by problem kind.
    pub config_errors: IntCounterVec,
    /// Revision of the active configuration (counts successful swaps).
    pub config_revision: IntGauge,
    /// Unix time of the last successful configuration load.
    pub config_last_success: Gauge,
    /// Routes in the active configuration.
    pub routes: IntGauge,
    /// Kubernetes source: `ApiServerRoute`s by verdict (`accepted`, `rejected`, `pending`).
    pub kube_routes: IntGaugeVec,
    /// Kubernetes source: rejected routes by condition reason (e.g. `HostnameConflict`).
    pub kube_rejected: IntGaugeVec,
    /// Kubernetes source: seconds from the oldest change of a batch to its snapshot
    /// being active (debounce included).
    pub kube_apply_seconds: HistogramVec,
    /// Kubernetes source: watch failures by resource (disconnects, expiry, denials).
    pub kube_watch_errors: IntCounterVec,
    /// Kubernetes source: status writes by result; Events published as `event`.
    pub kube_status_writes: IntCounterVec,
    /// Kubernetes source: referenced Secrets held (from one filtered watch).
    pub kube_secrets: IntGauge,
}

/// The registry while metrics are created: it keeps every family's name too.
struct Registrar {
    registry: Registry,
    names: std::cell::RefCell<Vec<String>>,
}

fn counter(registry: &Registrar, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    register(registry, Box::new(metric.clone()));
    metric
}

fn gauge(registry: &Registrar, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("metric {name} is malformed: {e}"));
    register(registry, Box::new(metric.clone()));
    metric
}

fn register(registry: &Registrar, metric: Box<dyn prometheus::core::Collector>) {
    let names = metric.desc().into_iter().map(|d| d.fq_name.clone());
    registry.names.borrow_mut().extend(names);
    // Names are static and unique; a failure here is a programming error caught by tests.
    if let Err(e) = registry.registry.register(metric) {
        panic!("metric registration failed: {e}");
    }
}

impl Metrics {
    /// Create and register every metric.
    pub fn new() -> Self {
        let registry = Registrar {
            registry: Registry::new(),
            names: std::cell::RefCell::default(),
        };
        let api = api::ApiRequests::new();
        for collector in api.collectors() {
            register(&registry, collector);
        }
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "apigate_request_duration_seconds",
                "Time from request headers to the end of the response, ordinary requests only.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0,
            ]),
            &["route"],
        )
        .unwrap_or_else(|e| panic!("histogram is malformed: {e}"));
        register(&registry, Box::new(request_duration.clone()));
        let config_revision = IntGauge::new(
            "apigate_config_revision",
            "Revision of the active configuration; increases with every successful swap.",
        )
        .unwrap_or_else(|e| panic!("gauge is malformed: {e}"));
        register(&registry, Box::new(config_revision.clone()));
        let config_last_success = Gauge::new(
            "apigate_config_last_success_timestamp_seconds",
            "Unix time of the last configuration that was loaded and activated.",
        )
        .unwrap_or_else(|e| panic!("gauge is malformed: {e}"));
        register(&registry, Box::new(config_last_success.clone()));
        let routes = IntGauge::new("apigate_routes", "Routes in the active configuration.")
            .unwrap_or_else(|e| panic!("gauge is malformed: {e}"));
        register(&registry, Box::new(routes.clone()));
        let kube_apply_seconds = HistogramVec::new(
            HistogramOpts::new(
                "apigate_kubernetes_apply_seconds",
                "Kubernetes source: time from a change to its snapshot being active (stage=apply) and compile time alone (stage=compile).",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["stage"],
        )
        .unwrap_or_else(|e| panic!("histogram is malformed: {e}"));
        register(&registry, Box::new(kube_apply_seconds.clone()));
        let backend_weight = GaugeVec::new(
            Opts::new(
                "apigate_backend_weight",
                "A backend's share of new requests (below 1 while it ramps up in slow start).",
            ),
            &["backend"],
        )
        .unwrap_or_else(|e| panic!("gauge is malformed: {e}"));
        register(&registry, Box::new(backend_weight.clone()));
        let certificate_expiry = GaugeVec::new(
            Opts::new(
                "apigate_certificate_expiry_timestamp_seconds",
                "Unix time a route's certificate file stops working (a chain's earliest notAfter, a CA bundle's latest), by route and certificate: serving, client_ca, upstream_ca, front_proxy.",
            ),
            &["route", "certificate"],
        )
        .unwrap_or_else(|e| panic!("gauge is malformed: {e}"));
        register(&registry, Box::new(certificate_expiry.clone()));
        let flow_wait = HistogramVec::new(
            HistogramOpts::new(
                "apigate_flow_control_wait_seconds",
                "Time requests waited for a slot under a route's maxInFlight, by route (only those that waited).",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["route"],
        )
        .unwrap_or_else(|e| panic!("histogram is malformed: {e}"));
        register(&registry, Box::new(flow_wait.clone()));
        let flow_top_share = GaugeVec::new(
            Opts::new(
                "apigate_flow_control_top_client_share",
                "Share of a route's recent requests sent by its busiest clients, by route and rank (1 to 3).",
            ),
            &["route", "rank"],
        )
        .unwrap_or_else(|e| panic!("gauge is malformed: {e}"));
        register(&registry, Box::new(flow_top_share.clone()));
        let probe_last_duration = GaugeVec::new(
            Opts::new(
                "apigate_probe_last_duration_seconds",
                "How long a backend's last active probe took.",
            ),
            &["backend"],
        )
        .unwrap_or_else(|e| panic!("gauge is malformed: {e}"));
        register(&registry, Box::new(probe_last_duration.clone()));
        let probe_duration = HistogramVec::new(
            HistogramOpts::new(
                "apigate_probe_duration_seconds",
                "Active health probe latency by result.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["result"],
        )
        .unwrap_or_else(|e| panic!("histogram is malformed: {e}"));
        register(&registry, Box::new(probe_duration.clone()));
        let kube_secrets = IntGauge::new(
            "apigate_kubernetes_secrets",
            "Kubernetes source: referenced Secrets held, from one cluster-wide Secret watch filtered on arrival.",
        )
        .unwrap_or_else(|e| panic!("gauge is malformed: {e}"));
        register(&registry, Box::new(kube_secrets.clone()));
        let gate_gauge = |name: &str, help: &str| {
            let metric = GaugeVec::new(Opts::new(name, help), &["gate"])
                .unwrap_or_else(|e| panic!("gauge is malformed: {e}"));
            register(&registry, Box::new(metric.clone()));
            metric
        };
        let rollout_gate_value = gate_gauge(
            "apigate_rollout_gate_value",
            "Each rollout gate's last value for the canary routes (absent when not measurable).",
        );
        let rollout_gate_threshold = gate_gauge(
            "apigate_rollout_gate_threshold",
            "Each rollout gate's threshold.",
        );
        let metrics = Metrics {
            kube_routes: gauge(
                &registry,
                "apigate_kubernetes_routes",
                "Kubernetes source: ApiServerRoutes by verdict.",
                &["verdict"],
            ),
            kube_rejected: gauge(
                &registry,
                "apigate_kubernetes_routes_rejected",
                "Kubernetes source: rejected ApiServerRoutes by condition reason.",
                &["reason"],
            ),
            kube_apply_seconds,
            kube_watch_errors: counter(
                &registry,
                "apigate_kubernetes_watch_errors_total",
                "Kubernetes source: watch failures by resource; watches retry with back-off.",
                &["resource"],
            ),
            kube_status_writes: counter(
                &registry,
                "apigate_kubernetes_status_writes_total",
                "Kubernetes source: status writes by result (written, failed) and Events published (event).",
                &["result"],
            ),
            kube_secrets,
            requests: counter(
                &registry,
                "apigate_requests_total",
                "Requests by route, backend and status code.",
                &["route", "backend", "code"],
            ),
            request_duration,
            in_flight: gauge(
                &registry,
                "apigate_requests_in_flight",
                "Requests currently in flight by route, backend and kind.",
                &["route", "backend", "kind"],
            ),
            upstream_failures: counter(
                &registry,
                "apigate_upstream_failures_total",
                "Failed upstream attempts by failure; connect, TLS, reset and response-timeout failures count against the replica.",
                &["route", "backend", "failure"],
            ),
            retries: counter(
                &registry,
                "apigate_retries_total",
                "Attempts retried on another backend, by the failure that caused the retry.",
                &["route", "reason"],
            ),
            tunnels: counter(
                &registry,
                "apigate_tunnels_total",
                "Upgraded and passthrough streams by how they ended.",
                &["route", "kind", "end"],
            ),
            head_refusals: counter(
                &registry,
                "apigate_request_head_refusals_total",
                "Request heads refused by the transport: too slow, too large or unparseable.",
                &["route", "reason"],
            ),
            http2_abuse: counter(
                &registry,
                "apigate_http2_abuse_total",
                "HTTP/2 client connections closed for too many stream resets or control frames.",
                &["route", "reason"],
            ),
            keepalive_timeouts: counter(
                &registry,
                "apigate_http2_keepalive_timeouts_total",
                "HTTP/2 client connections closed because the client answered no keepalive PING.",
                &["route"],
            ),
            ejections: counter(
                &registry,
                "apigate_backend_ejections_total",
                "Times a backend was ejected after consecutive failures.",
                &["backend"],
            ),
            backend_state: gauge(
                &registry,
                "apigate_backend_state",
                "1 for the health state a backend is in, 0 for the others.",
                &["backend", "state"],
            ),
            backend_weight,
            backend_transitions: counter(
                &registry,
                "apigate_backend_transitions_total",
                "Backend health state changes by the state entered.",
                &["to"],
            ),
            probes: counter(
                &registry,
                "apigate_probes_total",
                "Active health probes by backend and result.",
                &["backend", "result"],
            ),
            probe_duration,
            probe_last_duration,
            panic_mode: counter(
                &registry,
                "apigate_panic_mode_total",
                "Backend picks made while no backend of the route could take requests.",
                &["route"],
            ),
            connections: counter(
                &registry,
                "apigate_connections_total",
                "Downstream connections by listener and outcome.",
                &["listener", "result"],
            ),
            connections_open: gauge(
                &registry,
                "apigate_connections_open",
                "Open downstream connections.",
                &["listener"],
            ),
            tls_handshake_failures: counter(
                &registry,
                "apigate_tls_handshake_failures_total",
                "Downstream TLS handshake failures by route (\"none\" before one is known) and reason.",
                &["listener", "route", "reason"],
            ),
            rejections: counter(
                &registry,
                "apigate_rejections_total",
                "Requests answered by apigate itself, by route and reason.",
                &["route", "reason"],
            ),
            rollout_phase: gauge(
                &registry,
                "apigate_rollout_phase",
                "1 for the configuration rollout's phase, 0 for the others.",
                &["phase"],
            ),
            rollout_revision: gauge(
                &registry,
                "apigate_rollout_revision",
                "Policy revision served by route group (stable, canary).",
                &["group"],
            ),
            rollout_gate_value,
            rollout_gate_threshold,
            rollout_transitions: counter(
                &registry,
                "apigate_rollout_transitions_total",
                "Configuration rollout transitions: started, promoted, frozen, aborted, resumed, held, extended, superseded, queued, tightened.",
                &["transition"],
            ),
            access: counter(
                &registry,
                "apigate_access_total",
                "Connection admission decisions.",
                &["listener", "route", "result", "reason", "family"],
            ),
            revoked: counter(
                &registry,
                "apigate_connections_revoked_total",
                "Open connections closed after a configuration change revoked them.",
                &["listener", "reason"],
            ),
            passthrough_connections: counter(
                &registry,
                "apigate_passthrough_connections_total",
                "Connections spliced to a backend in passthrough mode.",
                &["route", "backend"],
            ),
            reloads: counter(
                &registry,
                "apigate_config_reloads_total",
                "Configuration loads by result.",
                &["result"],
            ),
            config_errors: counter(
                &registry,
                "apigate_config_errors_total",
                "Errors found in rejected configurations, by problem kind.",
                &["problem"],
            ),
            config_revision,
            config_last_success,
            routes,
            certificate_expiry,
            flow_rejected: counter(
                &registry,
                "apigate_flow_control_rejected_total",
                "Requests flow control refused with a 429, by route, policy (route: the route's own cap) and reason.",
                &["route", "policy", "reason"],
            ),
            flow_wait,
            flow_queued: gauge(
                &registry,
                "apigate_flow_control_queued",
                "Requests waiting for a slot under a route's maxInFlight.",
                &["route"],
            ),
            flow_in_flight: gauge(
                &registry,
                "apigate_flow_control_in_flight",
                "Requests holding a slot under a route's maxInFlight.",
                &["route"],
            ),
            flow_top_share,
            api,
            access_log_lines: counter(
                &registry,
                "apigate_access_log_lines_total",
                "Access log lines: written, dropped (the buffer was full) or failed (the write failed).",
                &["result"],
            ),
            names: registry.names.into_inner(),
            registry: registry.registry,
        };
        // Present from the start, at 0: an alert on `increase()` sees the first failure.
        for result in ["success", "failure"] {
            metrics.reloads.with_label_values(&[result]);
        }
        for result in ["written", "dropped", "failed"] {
            metrics.access_log_lines.with_label_values(&[result]);
        }
        metrics
    }

    /// The name of every metric family apigate exports, whether or not it has a series
    /// yet (dashboards and alert rules are checked against these).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Every metric's current values (what a scrape renders).
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }

    /// Render the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
