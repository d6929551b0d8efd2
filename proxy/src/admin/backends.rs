//! `/backends`: every replica apigate knows, its health state and why, its load and its
//! probe — as JSON for tools (and the canary rollout's gates), and as a table for
//! people (`/backends?format=text`).
//!
//! A replica is listed while any route of the active configuration lists it (ready or
//! draining), or while work is still in flight on it after its route dropped it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use apigate_control::snapshot::SlowStart;
use serde::Serialize;

use crate::balance::health::{now_nanos, State as HealthState};
use crate::balance::{BackendState, Load};
use crate::metrics::Metrics;
use crate::state::State;

/// One replica as `/backends` shows it.
#[derive(Debug, Serialize)]
pub struct BackendReport {
    /// `ip:port`.
    pub address: String,
    /// Health state: `healthy`, `slow_start`, `ejected`, `probation`, `unready`,
    /// `draining`.
    pub state: &'static str,
    /// Share of new requests it takes now (0 to 1).
    pub weight: f64,
    /// Seconds since it entered its state, where the state records it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds_in_state: Option<f64>,
    /// Seconds left of its ejection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ejected_for_seconds: Option<f64>,
    /// Ejections in a row (drives the back-off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ejection_streak: Option<u32>,
    /// Passive failures in a row while serving.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// Why it drains: `terminating` (endpoint) or `shutdown` (the replica said so).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_cause: Option<&'static str>,
    /// Work in flight on it.
    pub in_flight: InFlightReport,
    /// Requests sent to it recently (decays by half every second).
    pub recent_requests: f64,
    /// Its active check, if any route probes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeReport>,
    /// Routes that list it (`namespace/name`), `(draining)` marked; empty when only
    /// in-flight work keeps it.
    pub routes: Vec<String>,
}

/// In-flight counts by kind.
#[derive(Debug, Serialize)]
pub struct InFlightReport {
    /// Ordinary requests.
    pub ordinary: u64,
    /// Watches, followed logs, upgraded streams.
    pub long_running: u64,
    /// Passthrough connections.
    pub connections: u64,
}

/// A replica's active check.
#[derive(Debug, Serialize)]
pub struct ProbeReport {
    /// `https` or `tcp`.
    pub kind: &'static str,
    /// Passed in a row.
    pub passed: u32,
    /// Failed in a row.
    pub failed: u32,
    /// The replica refuses the probe's identity (401/403).
    pub misconfigured: bool,
    /// How long the last probe took (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_duration_ms: Option<f64>,
}

/// What the probers of a replica's routes say.
#[derive(Clone, Copy)]
struct ProbeSeen {
    kind: &'static str,
    misconfigured: bool,
    last: Option<std::time::Duration>,
}

struct Entry {
    backend: Arc<BackendState>,
    slow_start: SlowStart,
    probe: Option<ProbeSeen>,
    routes: Vec<String>,
}

/// Every replica the active configuration lists, plus those only in-flight work holds.
pub fn report(state: &State) -> Vec<BackendReport> {
    let active = state.load();
    let defaults = active.snapshot.gateway.defaults.slow_start;
    let mut entries: BTreeMap<SocketAddr, Entry> = BTreeMap::new();
    let mut add = |backend: &Arc<BackendState>, slow_start, route: String| {
        entries
            .entry(backend.addr)
            .or_insert_with(|| Entry {
                backend: backend.clone(),
                slow_start,
                probe: None,
                routes: Vec::new(),
            })
            .routes
            .push(route)
    };
    for runtime in &active.routes {
        let upstream = &runtime.upstream;
        let slow_start = upstream.settings.slow_start;
        for backend in &upstream.backends.states {
            add(backend, slow_start, runtime.label.to_string());
        }
        for backend in &upstream.draining {
            add(backend, slow_start, format!("{} (draining)", runtime.label));
        }
    }
    for runtime in &active.routes {
        let upstream = &runtime.upstream;
        for (index, backend) in upstream.backends.states.iter().enumerate() {
            if let (Some(prober), Some(entry)) =
                (runtime.prober(index), entries.get_mut(&backend.addr))
            {
                let seen = ProbeSeen {
                    kind: prober.kind(),
                    misconfigured: prober.misconfigured(),
                    last: prober.last_duration(),
                };
                entry.probe = Some(match entry.probe {
                    Some(before) => ProbeSeen {
                        misconfigured: before.misconfigured || seen.misconfigured,
                        last: before.last.or(seen.last),
                        ..before
                    },
                    None => seen,
                });
            }
        }
    }
    let in_flight = |b: &BackendState| {
        [Load::Ordinary, Load::LongRunning, Load::Connection]
            .into_iter()
            .any(|load| b.in_flight(load) > 0)
    };
    for backend in state.backends.all() {
        if !in_flight(&backend) {
            continue;
        }
        entries.entry(backend.addr).or_insert_with(|| Entry {
            backend: backend.clone(),
            slow_start: defaults,
            probe: None,
            routes: Vec::new(),
        });
    }
    let now = now_nanos();
    entries
        .into_values()
        .map(|e| entry_report(e, now))
        .collect()
}

fn seconds(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

fn entry_report(entry: Entry, now: u64) -> BackendReport {
    let backend = &entry.backend;
    let health = &backend.health;
    let current = health.state(now, &entry.slow_start);
    let mut report = BackendReport {
        address: backend.addr.to_string(),
        state: current.label(),
        weight: health.weight(now, &entry.slow_start),
        seconds_in_state: None,
        ejected_for_seconds: None,
        ejection_streak: None,
        consecutive_failures: None,
        drain_cause: None,
        in_flight: InFlightReport {
            ordinary: backend.in_flight(Load::Ordinary),
            long_running: backend.in_flight(Load::LongRunning),
            connections: backend.in_flight(Load::Connection),
        },
        recent_requests: backend.recent(),
        probe: None,
        routes: entry.routes,
    };
    match current {
        HealthState::Healthy { failures } => report.consecutive_failures = Some(failures),
        HealthState::SlowStart { since, failures } => {
            report.seconds_in_state = Some(seconds(now.saturating_sub(since)));
            report.consecutive_failures = Some(failures);
        }
        HealthState::Ejected { until, streak } => {
            report.ejected_for_seconds = Some(seconds(until.saturating_sub(now)));
            report.ejection_streak = Some(streak);
        }
        HealthState::Probation { streak, .. } => report.ejection_streak = Some(streak),
        HealthState::Unready { since } => {
            report.seconds_in_state = Some(seconds(now.saturating_sub(since)));
        }
        HealthState::Draining { since, cause } => {
            report.seconds_in_state = Some(seconds(now.saturating_sub(since)));
            report.drain_cause = Some(cause.as_str());
        }
    }
    if let Some(seen) = entry.probe {
        let run = health.probes();
        report.probe = Some(ProbeReport {
            kind: seen.kind,
            passed: run.passed,
            failed: run.failed,
            misconfigured: seen.misconfigured,
            last_duration_ms: seen.last.map(|d| d.as_secs_f64() * 1000.0),
        });
    }
    report
}

/// Set the per-backend health gauges from a report, just before a scrape: every listed
/// replica, draining ones and those only in-flight work holds included.
pub fn export(metrics: &Metrics, reports: &[BackendReport]) {
    metrics.backend_state.reset();
    metrics.backend_weight.reset();
    metrics.probe_last_duration.reset();
    for r in reports {
        if let Some(ms) = r.probe.as_ref().and_then(|p| p.last_duration_ms) {
            metrics
                .probe_last_duration
                .with_label_values(&[r.address.as_str()])
                .set(ms / 1000.0);
        }
        for label in HealthState::LABELS {
            metrics
                .backend_state
                .with_label_values(&[r.address.as_str(), label])
                .set(i64::from(label == r.state));
        }
        metrics
            .backend_weight
            .with_label_values(&[r.address.as_str()])
            .set(r.weight);
    }
}

/// The report as an aligned table.
pub fn text(reports: &[BackendReport]) -> String {
    let mut out = format!(
        "{:<40} {:<10} {:>6} {:>8} {:>6} {:>6} {:>9}  {}\n",
        "BACKEND", "STATE", "WEIGHT", "INFLIGHT", "LONG", "CONNS", "PROBE", "ROUTES"
    );
    for r in reports {
        let mut state = r.state.to_string();
        if let Some(cause) = r.drain_cause {
            state = format!("{state}({cause})");
        }
        let probe = match &r.probe {
            None => "-".to_string(),
            Some(p) if p.misconfigured => "refused".to_string(),
            Some(p) if p.failed > 0 => format!("fail×{}", p.failed),
            Some(p) => format!("ok×{}", p.passed),
        };
        let routes = if r.routes.is_empty() {
            "(in-flight work only)".to_string()
        } else {
            r.routes.join(", ")
        };
        let _ = writeln!(
            out,
            "{:<40} {:<10} {:>6.2} {:>8} {:>6} {:>6} {:>9}  {}",
            r.address,
            state,
            r.weight,
            r.in_flight.ordinary,
            r.in_flight.long_running,
            r.in_flight.connections,
            probe,
            routes
        );
    }
    out
}
