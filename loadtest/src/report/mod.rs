//! The result of a run as plain data ([`RunReport`], [`CompareReport`]): built once from
//! the recorded [`Totals`](crate::stats::Totals), then rendered for people
//! ([`terminal`]), machines ([`json`]) and as plots ([`html`]). Every renderer reads the
//! same struct, so the JSON and the terminal summary cannot disagree.

pub mod html;
pub mod json;
pub mod terminal;

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::actions::ActionReport;
use crate::distribution::Distribution;
use crate::scenario::Scenario;
use crate::stats::Totals;
use crate::verdict::Verdict;

/// Schema identifier of a single-run JSON document.
pub const RUN_SCHEMA: &str = "apigate-loadtest/run/v1";
/// Schema identifier of a compare JSON document.
pub const COMPARE_SCHEMA: &str = "apigate-loadtest/compare/v1";

/// Request counts of the measured phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requests {
    /// Successful requests (2xx or accepted status, full body).
    pub ok: u64,
    /// Failed requests, all kinds including `unfinished`.
    pub errors: u64,
    /// `errors / (ok + errors)`; 1 when nothing completed.
    pub error_rate: f64,
    /// Successful requests per second of measured time.
    pub throughput_rps: f64,
    /// Requests per op.
    pub by_op: BTreeMap<String, u64>,
    /// Response body bytes.
    pub bytes_received: u64,
}

/// Latency of successful requests in milliseconds, from the HDR histogram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Minimum.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
    /// `intended send time` (open loop) or `actual send time` (closed loop).
    pub measured_from: String,
}

/// Send lag summary in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendLag {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

/// Watch streams; not part of the latency numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Watches {
    /// Streams opened successfully.
    pub opened: u64,
    /// Streams open when the run ended.
    pub held_to_end: u64,
    /// Streams ended by the server or proxy before the end.
    pub ended_early: u64,
    /// Events received.
    pub events: u64,
    /// Failed watch attempts by kind.
    pub errors: BTreeMap<String, u64>,
    /// Streams per replica (header).
    pub per_replica: BTreeMap<String, u64>,
}

/// One timeline bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Bucket start, seconds since the measured phase started.
    pub t: f64,
    /// Successful requests per second in the bucket.
    pub rps: f64,
    /// Failed requests in the bucket.
    pub errors: u64,
    /// Requests sent again in the bucket (`--retries`), by the time of the retry.
    #[serde(default)]
    pub retried: u64,
    /// Median latency (ms), 0 when empty.
    pub p50: f64,
    /// 99th percentile latency (ms).
    pub p99: f64,
    /// Maximum latency (ms).
    pub max: f64,
    /// Each replica's share (0–1) of the responses in the bucket that named their
    /// replica.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub replica_share: BTreeMap<String, f64>,
}

/// One point of the latency-by-percentile curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PercentilePoint {
    /// Percentile (0–100).
    pub percentile: f64,
    /// Latency at it (ms).
    pub ms: f64,
}

/// Everything about one run against one target. Serialized as-is by `--json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// [`RUN_SCHEMA`].
    pub schema: String,
    /// Target name (compare) or URL.
    pub target: String,
    /// Target URL.
    pub url: String,
    /// The scenario as run.
    pub scenario: serde_json::Value,
    /// Length of the measured phase actually used for throughput (seconds).
    pub measured_seconds: f64,
    /// Request counts.
    pub requests: Requests,
    /// Latency summary.
    pub latency_ms: Latency,
    /// How late the generator sent requests relative to the timetable (open loop). When
    /// this grows, the load generator is the bottleneck, not the target.
    pub send_lag_ms: SendLag,
    /// Failures by kind label.
    pub errors: BTreeMap<String, u64>,
    /// The first message seen per failure kind.
    pub error_examples: BTreeMap<String, String>,
    /// Watch streams.
    pub watches: Watches,
    /// Distribution from the replica header (when any response had it or a replica set
    /// was given).
    pub distribution: Option<Distribution>,
    /// Distribution from scraping `apiserver_request_total` (when `--scrape` was given).
    pub scraped: Option<Distribution>,
    /// Scrape problems (a failed scrape leaves `scraped` empty).
    pub scrape_errors: Vec<String>,
    /// Throughput and latency per timeline bucket.
    pub timeline: Vec<TimelinePoint>,
    /// Latency by percentile, for plots.
    pub percentiles: Vec<PercentilePoint>,
    /// Threshold checks.
    pub verdict: Verdict,
    /// Retries by the signal that caused them (`--retries`): what a client-go client
    /// handles by itself. They are not failures; a request's outcome is its last attempt.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub retried: BTreeMap<String, u64>,
    /// The actions of a fault run (`--action`), in the order they ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionReport>,
    /// Requests per window between actions, by send time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<ActionWindow>,
}

/// The requests sent in one window of a fault run: from one action's start to the
/// next's (or the end), so each failure is seen next to the action before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionWindow {
    /// The action that opened the window; `start` for the time before the first.
    pub after: String,
    /// Start, seconds since the measured phase began.
    pub from_s: f64,
    /// End.
    pub to_s: f64,
    /// Requests that succeeded (perhaps after retries).
    pub ok: u64,
    /// Requests that failed for their caller: the number a fault run wants at zero.
    pub failed: u64,
    /// Retries (signals a client-go client handles by itself).
    pub retried: u64,
}

/// The windows between the actions that ran, over timeline buckets (by start time).
fn windows(t: &Totals, actions: &[ActionReport], measured: Duration) -> Vec<ActionWindow> {
    if actions.is_empty() {
        return Vec::new();
    }
    let starts: Vec<(String, f64)> = std::iter::once(("start".to_owned(), 0.0))
        .chain(
            actions
                .iter()
                .filter_map(|a| Some((a.label.clone(), a.started_s?))),
        )
        .collect();
    let end = measured.as_secs_f64();
    let w = t.bucket_width.as_secs_f64().max(1e-9);
    starts
        .iter()
        .enumerate()
        .map(|(i, (label, from))| {
            let to = starts.get(i + 1).map_or(f64::INFINITY, |next| next.1);
            let mut window = ActionWindow {
                after: label.clone(),
                from_s: *from,
                to_s: to.min(end.max(*from)),
                ok: 0,
                failed: 0,
                retried: 0,
            };
            for (b, bucket) in t.timeline.iter().enumerate() {
                let at = b as f64 * w;
                if at >= *from && at < to {
                    window.ok += bucket.ok;
                    window.failed += bucket.errors;
                    window.retried += bucket.retried;
                }
            }
            window
        })
        .collect()
}

/// Several runs of the same scenario against different targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareReport {
    /// [`COMPARE_SCHEMA`].
    pub schema: String,
    /// The scenario all runs used.
    pub scenario: serde_json::Value,
    /// One report per target, in the order given.
    pub runs: Vec<RunReport>,
    /// Passed only if every run passed.
    pub passed: bool,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Latency summary of a histogram (µs) in milliseconds.
pub fn latency_summary(h: &Histogram<u64>, measured_from: &str) -> Latency {
    let empty = h.is_empty();
    let q = |p: f64| {
        if empty {
            0.0
        } else {
            ms(h.value_at_quantile(p))
        }
    };
    Latency {
        count: h.len(),
        min: if empty { 0.0 } else { ms(h.min()) },
        mean: if empty {
            0.0
        } else {
            (h.mean()).round() / 1000.0
        },
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        p999: q(0.999),
        max: if empty { 0.0 } else { ms(h.max()) },
        measured_from: measured_from.to_owned(),
    }
}

fn percentile_curve(h: &Histogram<u64>) -> Vec<PercentilePoint> {
    if h.is_empty() {
        return Vec::new();
    }
    const PS: [f64; 16] = [
        0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999, 99.9995,
        99.9999, 100.0,
    ];
    PS.iter()
        .map(|&p| PercentilePoint {
            percentile: p,
            ms: ms(h.value_at_quantile(p / 100.0)),
        })
        .collect()
}

fn timeline(t: &Totals) -> Vec<TimelinePoint> {
    let w = t.bucket_width.as_secs_f64().max(1e-9);
    t.timeline
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let empty = b.latency.is_empty();
            TimelinePoint {
                t: i as f64 * w,
                rps: b.ok as f64 / w,
                errors: b.errors,
                retried: b.retried,
                p50: if empty {
                    0.0
                } else {
                    ms(b.latency.value_at_quantile(0.5))
                },
                p99: if empty {
                    0.0
                } else {
                    ms(b.latency.value_at_quantile(0.99))
                },
                max: if empty { 0.0 } else { ms(b.latency.max()) },
                replica_share: {
                    let total = b.replicas.values().sum::<u64>().max(1) as f64;
                    b.replicas
                        .iter()
                        .map(|(k, v)| (k.clone(), *v as f64 / total))
                        .collect()
                },
            }
        })
        .collect()
}

/// Inputs to [`RunReport::build`] besides the totals.
#[derive(Debug)]
pub struct RunMeta<'a> {
    /// Target name.
    pub target: &'a str,
    /// Target URL.
    pub url: &'a str,
    /// Scenario.
    pub scenario: &'a Scenario,
    /// Measured time for throughput.
    pub measured: Duration,
    /// Header distribution.
    pub distribution: Option<Distribution>,
    /// Scrape distribution.
    pub scraped: Option<Distribution>,
    /// Scrape problems.
    pub scrape_errors: Vec<String>,
    /// What the run's actions did.
    pub actions: Vec<ActionReport>,
}

impl RunReport {
    /// Builds the report; the verdict is filled in by [`crate::verdict`].
    pub fn build(meta: RunMeta<'_>, t: &Totals) -> Self {
        let errors_total = t.error_count();
        let attempted = t.ok + errors_total;
        let secs = meta.measured.as_secs_f64().max(1e-9);
        let measured_from = match meta.scenario.mode {
            crate::scenario::Mode::Open { .. } => "intended send time",
            crate::scenario::Mode::Closed { .. } => "actual send time",
        };
        let label_map = |m: &BTreeMap<crate::client::ErrorKind, u64>| -> BTreeMap<String, u64> {
            m.iter().map(|(k, v)| (k.label(), *v)).collect()
        };
        Self {
            schema: RUN_SCHEMA.to_owned(),
            target: meta.target.to_owned(),
            url: meta.url.to_owned(),
            scenario: serde_json::to_value(meta.scenario).unwrap_or(serde_json::Value::Null),
            measured_seconds: meta.measured.as_secs_f64(),
            requests: Requests {
                ok: t.ok,
                errors: errors_total,
                error_rate: if attempted == 0 {
                    1.0
                } else {
                    errors_total as f64 / attempted as f64
                },
                throughput_rps: t.ok as f64 / secs,
                by_op: t
                    .ops
                    .iter()
                    .map(|(k, v)| (k.name().to_owned(), *v))
                    .collect(),
                bytes_received: t.bytes,
            },
            latency_ms: latency_summary(&t.latency, measured_from),
            send_lag_ms: {
                let l = latency_summary(&t.send_lag, "");
                SendLag {
                    p50: l.p50,
                    p99: l.p99,
                    max: l.max,
                }
            },
            errors: label_map(&t.errors),
            error_examples: t
                .error_examples
                .iter()
                .map(|(k, v)| (k.label(), v.clone()))
                .collect(),
            watches: Watches {
                opened: t.watches.opened,
                held_to_end: t.watches.held_to_end,
                ended_early: t.watches.ended_early,
                events: t.watches.events,
                errors: label_map(&t.watches.errors),
                per_replica: t.watches.per_replica.clone(),
            },
            distribution: meta.distribution,
            scraped: meta.scraped,
            scrape_errors: meta.scrape_errors,
            timeline: timeline(t),
            percentiles: percentile_curve(&t.latency),
            verdict: Verdict::default(),
            retried: t.retried.iter().map(|(k, v)| (k.label(), *v)).collect(),
            windows: windows(t, &meta.actions, meta.measured),
            actions: meta.actions,
        }
    }
}
