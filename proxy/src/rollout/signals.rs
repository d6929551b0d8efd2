//! The gates' inputs, read from what the proxy already counts: the Prometheus
//! counters by route (so a gate reads exactly what an operator's dashboard shows) and
//! the replicas' health states.

use std::collections::{BTreeSet, HashMap};

use apigate_control::RouteId;
use prometheus::proto::MetricFamily;

use super::gates::{Counters, Health, BOUNDS};
use crate::balance::health::{now_nanos, Admission};
use crate::metrics::Metrics;
use crate::state::State;

/// Rejections apigate answers with a 5xx itself: they count against the success rate.
/// (A replica's own 5xx is forwarded, never a rejection.)
const OWN_FAILURES: [&str; 5] = [
    "upstream_unavailable",
    "upstream_timeout",
    "no_backend",
    "internal",
    "missing_connection_context",
];

/// Upstream failures that mean "could not reach the replica".
const CONNECT_FAILURES: [&str; 3] = ["connect", "connect_timeout", "tls"];

/// The summed counters of `routes` now.
pub fn counters(metrics: &Metrics, routes: &BTreeSet<RouteId>) -> Counters {
    let labels: BTreeSet<String> = routes.iter().map(ToString::to_string).collect();
    let mut per_route: HashMap<String, Counters> = HashMap::new();
    for family in metrics.gather() {
        read_family(&family, &labels, &mut per_route);
    }
    let mut total = Counters::default();
    for counters in per_route.values() {
        total.add(counters);
    }
    total
}

fn label<'a>(metric: &'a prometheus::proto::Metric, name: &str) -> &'a str {
    metric
        .get_label()
        .iter()
        .find(|l| l.name() == name)
        .map_or("", |l| l.value())
}

fn read_family(
    family: &MetricFamily,
    routes: &BTreeSet<String>,
    out: &mut HashMap<String, Counters>,
) {
    for metric in family.get_metric() {
        let route = label(metric, "route");
        if !routes.contains(route) {
            continue;
        }
        let counter = metric.get_counter().get_value() as u64;
        let entry = out.entry(route.to_string()).or_default();
        match family.name() {
            "apigate_requests_total" => entry.requests += counter,
            "apigate_rejections_total" if OWN_FAILURES.contains(&label(metric, "reason")) => {
                entry.own_failures += counter;
            }
            "apigate_upstream_failures_total"
                if CONNECT_FAILURES.contains(&label(metric, "failure")) =>
            {
                entry.upstream_errors += counter;
            }
            "apigate_retries_total" => entry.retries += counter,
            "apigate_tls_handshake_failures_total" => entry.handshake_failures += counter,
            "apigate_access_total" => match label(metric, "result") {
                "allowed" => entry.allowed += counter,
                "denied" => entry.denied += counter,
                _ => {}
            },
            "apigate_request_duration_seconds" => {
                let histogram = metric.get_histogram();
                entry.latency.count += histogram.get_sample_count();
                for bucket in histogram.get_bucket() {
                    if let Some(i) = BOUNDS
                        .iter()
                        .position(|b| (b - bucket.upper_bound()).abs() < 1e-9)
                    {
                        entry.latency.buckets[i] += bucket.cumulative_count();
                    }
                }
            }
            _ => {}
        }
    }
}

/// How many of `routes`' replicas can take requests now.
pub fn health(state: &State, routes: &BTreeSet<RouteId>) -> Health {
    let active = state.load();
    let now = now_nanos();
    let mut health = Health::default();
    for id in routes {
        let Some(runtime) = active.route(id) else {
            continue;
        };
        let slow_start = &runtime.route.settings.slow_start;
        for backend in &runtime.upstream.backends.states {
            health.total += 1;
            if backend.health.admission(now, slow_start) != Admission::Out {
                health.serving += 1;
            }
        }
    }
    health
}
