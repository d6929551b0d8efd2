//! Request counters in the shape of kube-apiserver's own metrics.
//!
//! `/metrics` exposes `apiserver_request_total` with the labels kube-apiserver uses
//! (`code, component, dry_run, group, resource, scope, subresource, verb, version`), so
//! one scraper measures the balance across fake and real replicas alike. Unlike kube,
//! a WATCH is counted when it starts rather than when it ends, so a load test sees it
//! immediately. `fake_apiserver_open_watches` shows the streams open right now.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The label values of one `apiserver_request_total` series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RequestLabels {
    pub(crate) verb: &'static str,
    pub(crate) code: u16,
    pub(crate) resource: &'static str,
    pub(crate) subresource: &'static str,
    pub(crate) scope: &'static str,
}

/// Counters shared by every connection of one replica.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: AtomicU64,
    /// Unix time (ns) of the latest request counted in `requests`.
    last_request: AtomicU64,
    open_watches: Arc<AtomicU64>,
    watch_events: AtomicU64,
    ready: AtomicBool,
    by_labels: Mutex<BTreeMap<RequestLabels, u64>>,
}

/// Keeps a watch counted as open for as long as it lives.
#[derive(Debug)]
pub(crate) struct WatchGuard(Arc<AtomicU64>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        Metrics {
            ready: AtomicBool::new(true),
            ..Metrics::default()
        }
    }

    pub(crate) fn request_started(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.last_request.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn last_request_unix_nanos(&self) -> u64 {
        self.last_request.load(Ordering::Relaxed)
    }

    pub(crate) fn requests_total(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub(crate) fn record(&self, labels: RequestLabels) {
        // A poisoned lock only means another request panicked mid-increment; keep counting.
        let mut map = self.by_labels.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(labels).or_insert(0) += 1;
    }

    pub(crate) fn watch_opened(&self) -> WatchGuard {
        self.open_watches.fetch_add(1, Ordering::Relaxed);
        WatchGuard(self.open_watches.clone())
    }

    pub(crate) fn open_watches(&self) -> u64 {
        self.open_watches.load(Ordering::Relaxed)
    }

    /// A watch event was handed to the HTTP layer (which asks for one only when the
    /// client's flow-control window has room).
    pub(crate) fn watch_event_sent(&self) {
        self.watch_events.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn watch_events(&self) -> u64 {
        self.watch_events.load(Ordering::Relaxed)
    }

    pub(crate) fn set_ready(&self, ready: bool) -> bool {
        self.ready.swap(ready, Ordering::Relaxed)
    }

    pub(crate) fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Prometheus text exposition format 0.0.4.
    pub(crate) fn render(&self, replica: &str) -> String {
        let replica = escape_label(replica);
        let mut out = String::with_capacity(1024);
        out.push_str("# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.\n");
        out.push_str("# TYPE apiserver_request_total counter\n");
        {
            let map = self.by_labels.lock().unwrap_or_else(|p| p.into_inner());
            for (l, n) in map.iter() {
                let group_version = if l.resource.is_empty() { "" } else { "v1" };
                let _ = writeln!(
                    out,
                    "apiserver_request_total{{code=\"{}\",component=\"apiserver\",dry_run=\"\",group=\"\",resource=\"{}\",scope=\"{}\",subresource=\"{}\",verb=\"{}\",version=\"{}\"}} {}",
                    l.code, l.resource, l.scope, l.subresource, l.verb, group_version, n
                );
            }
        }
        let gauges = [
            (
                "fake_apiserver_open_watches",
                "Watch streams open right now.",
                self.open_watches(),
            ),
            (
                "fake_apiserver_requests_total",
                "Requests received, health and metrics excluded.",
                self.requests_total(),
            ),
            (
                "fake_apiserver_watch_events_total",
                "Watch events sent, all watches together.",
                self.watch_events(),
            ),
            (
                "fake_apiserver_ready",
                "1 while /readyz answers 200.",
                u64::from(self.ready()),
            ),
        ];
        for (name, help, value) in gauges {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            let _ = writeln!(out, "{name}{{replica=\"{replica}\"}} {value}");
        }
        out
    }
}

/// Escapes a label value (backslash, double quote, newline) per the text format.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let m = Metrics::new();
        let list = RequestLabels {
            verb: "LIST",
            code: 200,
            resource: "pods",
            subresource: "",
            scope: "namespace",
        };
        m.record(list.clone());
        m.record(list);
        let guard = m.watch_opened();
        let text = m.render("r0");
        assert!(text.contains("apiserver_request_total{code=\"200\",component=\"apiserver\",dry_run=\"\",group=\"\",resource=\"pods\",scope=\"namespace\",subresource=\"\",verb=\"LIST\",version=\"v1\"} 2\n"), "{text}");
        assert!(text.contains("fake_apiserver_open_watches{replica=\"r0\"} 1\n"));
        drop(guard);
        assert_eq!(m.open_watches(), 0);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
