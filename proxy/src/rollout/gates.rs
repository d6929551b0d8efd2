//! The gates: pure judgement of the canary routes' traffic under a new revision
//! against their own baseline before it and against absolute thresholds.
//!
//! Every gate ends in pass, fail or inconclusive (too little traffic to judge). A gate
//! fails only when its value is past its threshold **and** worse than the baseline
//! (when the baseline could be measured): a cluster that was already failing before
//! the change does not block the change that may fix it.
//!
//! Promotion needs the two *required* gates to pass: success rate (enough requests)
//! and backend health. The others fail a rollout whenever they have enough traffic to
//! judge, and are only reported as inconclusive otherwise: kube clients hold
//! connections for hours, so a canary route may see too few new connections in a bake
//! to judge handshakes or denials, and that must not hold every rollout.

use std::time::Duration;

use apigate_control::rollout::Gates;
use serde::Serialize;

/// Cumulative counters of a set of routes at one moment (sums over the routes).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    /// Requests answered (any status).
    pub requests: u64,
    /// Requests apigate answered itself with a 5xx (no replica, upstream failure,
    /// timeout, internal error). A replica's own 5xx are not here.
    pub own_failures: u64,
    /// Upstream attempts that failed to connect or in TLS.
    pub upstream_errors: u64,
    /// Attempts retried on another replica (attempts = requests + retries).
    pub retries: u64,
    /// Downstream TLS handshakes that failed after the route was known.
    pub handshake_failures: u64,
    /// Connections the allowlist admitted.
    pub allowed: u64,
    /// Connections the allowlist denied.
    pub denied: u64,
    /// Ordinary-request latency histogram: cumulative counts per bucket bound.
    pub latency: Latency,
}

/// A cumulative latency histogram (Prometheus buckets: upper bounds in seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    /// Cumulative counts at each bound of [`BOUNDS`].
    pub buckets: [u64; BOUNDS.len()],
    /// Observations in total.
    pub count: u64,
}

/// The bucket bounds of `apigate_request_duration_seconds`.
pub const BOUNDS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

impl Counters {
    /// What happened between `earlier` and `self` (counters only grow; a reset reads
    /// as zero).
    pub fn since(&self, earlier: &Counters) -> Counters {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let mut buckets = [0; BOUNDS.len()];
        for (i, b) in buckets.iter_mut().enumerate() {
            *b = d(self.latency.buckets[i], earlier.latency.buckets[i]);
        }
        Counters {
            requests: d(self.requests, earlier.requests),
            own_failures: d(self.own_failures, earlier.own_failures),
            upstream_errors: d(self.upstream_errors, earlier.upstream_errors),
            retries: d(self.retries, earlier.retries),
            handshake_failures: d(self.handshake_failures, earlier.handshake_failures),
            allowed: d(self.allowed, earlier.allowed),
            denied: d(self.denied, earlier.denied),
            latency: Latency {
                buckets,
                count: d(self.latency.count, earlier.latency.count),
            },
        }
    }

    /// Add another route's counters.
    pub fn add(&mut self, other: &Counters) {
        self.requests += other.requests;
        self.own_failures += other.own_failures;
        self.upstream_errors += other.upstream_errors;
        self.retries += other.retries;
        self.handshake_failures += other.handshake_failures;
        self.allowed += other.allowed;
        self.denied += other.denied;
        for (mine, theirs) in self.latency.buckets.iter_mut().zip(other.latency.buckets) {
            *mine += theirs;
        }
        self.latency.count += other.latency.count;
    }
}

impl Latency {
    /// The p99 as Prometheus' `histogram_quantile` estimates it (linear within the
    /// bucket), or `None` with no observations.
    pub fn p99(&self) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = 0.99 * self.count as f64;
        let mut lower = (0.0, 0u64);
        for (bound, cumulative) in BOUNDS.iter().zip(self.buckets) {
            if cumulative as f64 >= rank {
                let (low, below) = lower;
                let inside = (cumulative - below) as f64;
                let share = if inside > 0.0 {
                    (rank - below as f64) / inside
                } else {
                    1.0
                };
                return Some(low + (bound - low) * share);
            }
            lower = (*bound, cumulative);
        }
        // Above the last bound: report the last bound, as histogram_quantile does.
        Some(BOUNDS[BOUNDS.len() - 1])
    }
}

/// The share of the canary routes' replicas able to take requests.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Health {
    /// Replicas of the canary routes.
    pub total: u64,
    /// Of them, those not ejected, unready or draining.
    pub serving: u64,
}

/// One gate's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Within its threshold, or no worse than the baseline.
    Pass,
    /// Past its threshold and worse than the baseline.
    Fail,
    /// Too little traffic to judge.
    Inconclusive,
}

/// One gate's reading: what an operator sees in the status and the metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reading {
    /// Gate name (a metric label).
    pub gate: &'static str,
    /// The canary routes' value under the new revision (`None`: not measurable).
    pub value: Option<f64>,
    /// The same routes' value before the rollout.
    pub baseline: Option<f64>,
    /// The threshold.
    pub threshold: f64,
    /// Verdict.
    pub outcome: Outcome,
    /// Whether promotion waits for this gate to be conclusive.
    pub required: bool,
    /// Why, in words (for inconclusive: what is missing).
    pub detail: String,
}

/// All gates' readings and the overall verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Fail if any gate fails; else inconclusive if a required gate is; else pass.
    pub outcome: Outcome,
    /// Each gate.
    pub readings: Vec<Reading>,
}

impl Verdict {
    /// The first failing (else inconclusive) reading, for a one-line reason.
    pub fn reason(&self) -> Option<&Reading> {
        self.readings
            .iter()
            .find(|r| r.outcome == Outcome::Fail)
            .or_else(|| {
                self.readings
                    .iter()
                    .find(|r| r.required && r.outcome == Outcome::Inconclusive)
            })
    }
}

/// Which way a gate's value is better.
#[derive(Clone, Copy)]
enum Better {
    Higher,
    Lower,
}

fn rate(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 / whole as f64).min(1.0))
}

/// Judge one ratio gate: conclusive once `whole ≥ min`.
#[allow(clippy::too_many_arguments)]
fn judge(
    gate: &'static str,
    value: Option<f64>,
    whole: u64,
    baseline: Option<f64>,
    baseline_whole: u64,
    min: u64,
    threshold: f64,
    better: Better,
) -> Reading {
    let baseline = baseline.filter(|_| baseline_whole >= min);
    let (outcome, detail) = match value {
        Some(v) if whole >= min => {
            let past = match better {
                Better::Higher => v < threshold,
                Better::Lower => v > threshold,
            };
            let worse = baseline.is_none_or(|b| match better {
                Better::Higher => v < b,
                Better::Lower => v > b,
            });
            if past && worse {
                (
                    Outcome::Fail,
                    format!("{v:.4} is past the threshold {threshold}"),
                )
            } else {
                (Outcome::Pass, String::new())
            }
        }
        _ => (
            Outcome::Inconclusive,
            format!("{whole} observed, {min} needed"),
        ),
    };
    Reading {
        gate,
        value,
        baseline,
        threshold,
        outcome,
        required: false,
        detail,
    }
}

/// Judge the canary routes' window `now` (counters since the rollout began) against
/// `before` (the same routes over a bake-length window just before it) and the
/// replicas' health now and at the start.
pub fn evaluate(
    gates: &Gates,
    now: &Counters,
    before: Option<&Counters>,
    health: Health,
    health_before: Option<Health>,
) -> Verdict {
    let empty = Counters::default();
    let b = before.unwrap_or(&empty);
    let attempts = |c: &Counters| c.requests + c.retries;
    let connections = |c: &Counters| c.allowed + c.denied;
    let mut success = judge(
        "success_rate",
        rate(now.requests.saturating_sub(now.own_failures), now.requests),
        now.requests,
        rate(b.requests.saturating_sub(b.own_failures), b.requests),
        b.requests,
        gates.min_requests,
        gates.min_success_rate,
        Better::Higher,
    );
    success.required = true;
    let mut readings = vec![
        success,
        judge(
            "upstream_error_rate",
            rate(now.upstream_errors, attempts(now)),
            now.requests,
            rate(b.upstream_errors, attempts(b)),
            b.requests,
            gates.min_requests,
            gates.max_upstream_error_rate,
            Better::Lower,
        ),
        judge(
            "tls_handshake_failure_rate",
            rate(now.handshake_failures, now.allowed),
            now.allowed,
            rate(b.handshake_failures, b.allowed),
            b.allowed,
            gates.min_connections,
            gates.max_tls_handshake_failure_rate,
            Better::Lower,
        ),
        judge(
            "acl_denial_rate",
            rate(now.denied, connections(now)),
            connections(now),
            rate(b.denied, connections(b)),
            connections(b),
            gates.min_connections,
            gates.max_acl_denial_rate,
            Better::Lower,
        ),
    ];
    let healthy = |h: Health| rate(h.serving, h.total);
    let mut health_reading = judge(
        "healthy_backends",
        healthy(health),
        health.total,
        health_before.and_then(healthy),
        health_before.map_or(0, |h| h.total),
        1,
        gates.min_healthy_backends,
        Better::Higher,
    );
    if health.total == 0 {
        // A route with no replicas has nothing to judge here; the request gates see
        // its 503s.
        health_reading.outcome = Outcome::Pass;
        health_reading.detail = "no replicas".into();
    }
    health_reading.required = true;
    readings.push(health_reading);
    readings.push(latency(gates, &now.latency, before.map(|c| &c.latency)));
    let outcome = if readings.iter().any(|r| r.outcome == Outcome::Fail) {
        Outcome::Fail
    } else if readings
        .iter()
        .any(|r| r.required && r.outcome == Outcome::Inconclusive)
    {
        Outcome::Inconclusive
    } else {
        Outcome::Pass
    };
    Verdict { outcome, readings }
}

/// The p99 latency ratio gate: needs enough requests in both windows; fails when the
/// ratio is past the threshold and the p99 itself above the floor.
fn latency(gates: &Gates, now: &Latency, before: Option<&Latency>) -> Reading {
    let p99 = now.p99().filter(|_| now.count >= gates.min_requests);
    let base = before
        .and_then(Latency::p99)
        .filter(|_| before.is_some_and(|b| b.count >= gates.min_requests));
    let floor = secs(gates.min_p99_latency);
    let (value, outcome, detail) = match (p99, base) {
        (Some(p), Some(b)) if b > 0.0 => {
            let ratio = p / b;
            if ratio > gates.max_p99_latency_ratio && p > floor {
                (
                    Some(ratio),
                    Outcome::Fail,
                    format!("p99 {:.0} ms is {ratio:.1}× the baseline", p * 1e3),
                )
            } else {
                (Some(ratio), Outcome::Pass, String::new())
            }
        }
        _ => (
            None,
            Outcome::Inconclusive,
            format!(
                "{} and {} ordinary requests observed, {} needed in each window",
                now.count,
                before.map_or(0, |b| b.count),
                gates.min_requests
            ),
        ),
    };
    Reading {
        gate: "p99_latency_ratio",
        value,
        baseline: Some(1.0).filter(|_| base.is_some()),
        threshold: gates.max_p99_latency_ratio,
        outcome,
        required: false,
        detail,
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
