//! A route's per-request series (`apigate_requests_total`, the duration histogram),
//! resolved once per route and replica instead of by label lookup on every request.
//!
//! Resolved on first use, so a route that gets no traffic adds no series and no memory
//! beyond one empty slot per replica (a seed holds thousands of routes).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use prometheus::{Histogram, IntCounter};

use crate::balance::BackendState;
use crate::metrics::Metrics;

/// Statuses resolved once per replica; others are looked up per request.
const COMMON: [u16; 15] = [
    200, 201, 204, 304, 400, 401, 403, 404, 409, 422, 429, 500, 502, 503, 504,
];

/// One replica's series by common status.
type ByCode = [OnceLock<IntCounter>; COMMON.len()];

/// The per-request series of one route.
pub struct RequestMetrics {
    metrics: Arc<Metrics>,
    route: Arc<str>,
    duration: OnceLock<Histogram>,
    /// In the route's replica order; `None` is `backend="none"` (apigate answered).
    replicas: Vec<(Option<SocketAddr>, OnceLock<Box<ByCode>>)>,
}

impl RequestMetrics {
    /// The series of `route` over `backends`.
    pub fn new(metrics: Arc<Metrics>, route: Arc<str>, backends: &[Arc<BackendState>]) -> Self {
        let replicas = backends
            .iter()
            .map(|b| Some(b.addr))
            .chain([None])
            .map(|addr| (addr, OnceLock::new()))
            .collect();
        RequestMetrics {
            metrics,
            route,
            duration: OnceLock::new(),
            replicas,
        }
    }

    /// Count one request answered with `code` by `backend` (`None`: by apigate).
    pub fn count(&self, backend: Option<&BackendState>, code: u16, code_label: &str) {
        let addr = backend.map(|b| b.addr);
        let slot = self.replicas.iter().find(|(a, _)| *a == addr);
        let common = COMMON.iter().position(|c| *c == code);
        let backend_label = backend.map_or("none", |b| b.label.as_str());
        match (slot, common) {
            (Some((_, series)), Some(index)) => {
                let by_code =
                    series.get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())));
                by_code[index]
                    .get_or_init(|| {
                        self.metrics.requests.with_label_values(&[
                            &*self.route,
                            backend_label,
                            code_label,
                        ])
                    })
                    .inc();
            }
            // A rare status, or a replica of another configuration.
            _ => self
                .metrics
                .requests
                .with_label_values(&[&*self.route, backend_label, code_label])
                .inc(),
        }
    }

    /// Observe an ordinary request's duration.
    pub fn observe_duration(&self, seconds: f64) {
        self.duration
            .get_or_init(|| {
                self.metrics
                    .request_duration
                    .with_label_values(&[&*self.route])
            })
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::BackendRegistry;

    #[test]
    fn counts_land_in_the_same_series_resolved_or_looked_up() {
        let metrics = Arc::new(Metrics::new());
        let registry = BackendRegistry::default();
        let (a, _) = registry.get("127.0.0.1:1".parse().unwrap());
        let (other, _) = registry.get("127.0.0.1:2".parse().unwrap());
        let series = RequestMetrics::new(metrics.clone(), "ns/r".into(), std::slice::from_ref(&a));
        let get = |backend: &str, code: &str| {
            metrics
                .requests
                .with_label_values(&["ns/r", backend, code])
                .get()
        };
        for _ in 0..3 {
            series.count(Some(&a), 200, "200");
        }
        // A rare status, apigate's own answer, and a replica the route does not list.
        series.count(Some(&a), 418, "418");
        series.count(None, 503, "503");
        series.count(Some(&other), 200, "200");
        assert_eq!(get(&a.label, "200"), 3);
        assert_eq!(get(&a.label, "418"), 1);
        assert_eq!(get("none", "503"), 1);
        assert_eq!(get(&other.label, "200"), 1);
        series.observe_duration(0.5);
        series.observe_duration(1.5);
        let histogram = metrics.request_duration.with_label_values(&["ns/r"]);
        assert_eq!(histogram.get_sample_count(), 2);
        assert!((histogram.get_sample_sum() - 2.0).abs() < 1e-9);
    }
}
