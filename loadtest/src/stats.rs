//! What happened during a run: the HDR latency histogram, errors by kind, per-replica
//! counts, a per-interval timeline, and watch streams (counted as streams, never as
//! latency samples).
//!
//! Recording goes to one of a few mutex-protected shards (picked by client index) so
//! clients on different threads rarely contend; [`Stats::finish`] merges them. Live
//! counters for the progress line are plain atomics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::client::ErrorKind;
use crate::retry::Signal;
use crate::scenario::Op;

/// Highest latency the histograms can hold, in microseconds (1 hour); longer values are
/// clamped.
const MAX_MICROS: u64 = 3_600_000_000;
/// Upper bound on timeline buckets; long runs get wider buckets.
const MAX_BUCKETS: usize = 600;

fn histogram(sigfig: u8) -> Histogram<u64> {
    // Constant, valid bounds (1 µs .. 1 h, sigfig 2 or 3): construction cannot fail.
    Histogram::new_with_bounds(1, MAX_MICROS, sigfig.min(5))
        .unwrap_or_else(|e| unreachable!("constant histogram bounds are valid: {e}"))
}

/// Microseconds of a duration, at least 1 (HDR histograms start at 1).
pub fn micros(d: Duration) -> u64 {
    (d.as_micros().min(u128::from(MAX_MICROS)) as u64).max(1)
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response with an accepted status and a complete body.
    Ok,
    /// A failure of the given kind.
    Failed(ErrorKind),
}

/// One finished, measured request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Which op.
    pub op: Op,
    /// Intended (open loop) or actual (closed loop) send time, since the measured phase
    /// started.
    pub since_start: Duration,
    /// From the intended/actual send time to the last body byte.
    pub latency: Duration,
    /// Result.
    pub outcome: Outcome,
    /// Value of the replica header, if the response had one.
    pub replica: Option<String>,
    /// Response body bytes.
    pub bytes: u64,
    /// How late the generator itself sent it: actual send time minus the scheduled
    /// time, not counting waits for a free `--max-inflight` slot (open loop; zero in
    /// closed loop). Large values mean the load generator (or a busy machine), not the
    /// target, was the bottleneck.
    pub send_lag: Duration,
    /// What went wrong, for failures (kept once per kind as an example for the report).
    pub error: Option<String>,
}

/// One timeline bucket: requests whose send time fell into it.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// Requests sent again in the bucket (`--retries`), by the time of the retry.
    pub retried: u64,
    /// Latency of the successful ones (µs, 2 significant digits).
    pub latency: Histogram<u64>,
    /// Responses per replica header value (all statuses): how the share of each
    /// replica changes over the run (a slow-start ramp, a drain).
    pub replicas: BTreeMap<String, u64>,
}

/// Counters of watch streams.
#[derive(Debug, Clone, Default)]
pub struct WatchStats {
    /// Streams that got a successful response.
    pub opened: u64,
    /// Streams that were still open when the run ended (closed by us).
    pub held_to_end: u64,
    /// Streams the server (or proxy) ended before the run ended.
    pub ended_early: u64,
    /// Newline-delimited events received.
    pub events: u64,
    /// Failed watch attempts by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Streams opened per replica (from the replica header).
    pub per_replica: BTreeMap<String, u64>,
}

/// Everything recorded in one shard, and after [`Stats::finish`], in total.
#[derive(Debug, Clone)]
pub struct Totals {
    /// Latency of successful measured requests (µs, 3 significant digits).
    pub latency: Histogram<u64>,
    /// Successful requests.
    pub ok: u64,
    /// Failures by kind (including `unfinished`, added by the runner).
    pub errors: BTreeMap<ErrorKind, u64>,
    /// The first error message seen per kind, so a report says *why*, not just how many.
    pub error_examples: BTreeMap<ErrorKind, String>,
    /// Retries by the signal that caused them (`--retries`).
    pub retried: BTreeMap<Signal, u64>,
    /// Requests per op (all outcomes).
    pub ops: BTreeMap<Op, u64>,
    /// Responses per replica header value (all statuses).
    pub replicas: BTreeMap<String, u64>,
    /// Responses without the replica header.
    pub unattributed: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// Timeline buckets of `bucket_width`.
    pub timeline: Vec<Bucket>,
    /// Width of a timeline bucket.
    pub bucket_width: Duration,
    /// Latest completion, since the measured phase started.
    pub last_completion: Duration,
    /// Watch streams.
    pub watches: WatchStats,
    /// Send lag of measured requests (µs, 2 significant digits), see [`Sample::send_lag`].
    pub send_lag: Histogram<u64>,
}

impl Totals {
    fn new(buckets: usize, bucket_width: Duration) -> Self {
        Self {
            latency: histogram(3),
            ok: 0,
            errors: BTreeMap::new(),
            error_examples: BTreeMap::new(),
            retried: BTreeMap::new(),
            ops: BTreeMap::new(),
            replicas: BTreeMap::new(),
            unattributed: 0,
            bytes: 0,
            timeline: (0..buckets)
                .map(|_| Bucket {
                    ok: 0,
                    errors: 0,
                    retried: 0,
                    latency: histogram(2),
                    replicas: BTreeMap::new(),
                })
                .collect(),
            bucket_width,
            last_completion: Duration::ZERO,
            watches: WatchStats::default(),
            send_lag: histogram(2),
        }
    }

    fn record(&mut self, s: Sample) {
        *self.ops.entry(s.op).or_default() += 1;
        match &s.replica {
            Some(r) => *self.replicas.entry(r.clone()).or_default() += 1,
            None => {
                self.unattributed += u64::from(
                    s.outcome == Outcome::Ok
                        || matches!(s.outcome, Outcome::Failed(ErrorKind::Status(_))),
                )
            }
        }
        self.bytes += s.bytes;
        self.send_lag.saturating_record(micros(s.send_lag));
        let idx = (s.since_start.as_nanos() / self.bucket_width.as_nanos().max(1)) as usize;
        let idx = idx.min(self.timeline.len().saturating_sub(1));
        let done = s.since_start + s.latency;
        if done > self.last_completion {
            self.last_completion = done;
        }
        let us = micros(s.latency);
        if let (Some(replica), Some(b)) = (&s.replica, self.timeline.get_mut(idx)) {
            *b.replicas.entry(replica.clone()).or_default() += 1;
        }

        match s.outcome {
            Outcome::Ok => {
                self.ok += 1;
                self.latency.saturating_record(us);
                if let Some(b) = self.timeline.get_mut(idx) {
                    b.ok += 1;
                    b.latency.saturating_record(us);
                }
            }
            Outcome::Failed(kind) => {
                *self.errors.entry(kind).or_default() += 1;
                let error = s.error;
                self.error_examples
                    .entry(kind)
                    .or_insert_with(|| error.unwrap_or_else(|| kind.label()));
                if let Some(b) = self.timeline.get_mut(idx) {
                    b.errors += 1;
                }
            }
        }
    }

    fn record_retry(&mut self, signal: Signal, since_start: Duration) {
        *self.retried.entry(signal).or_default() += 1;
        let idx = (since_start.as_nanos() / self.bucket_width.as_nanos().max(1)) as usize;
        let idx = idx.min(self.timeline.len().saturating_sub(1));
        if let Some(b) = self.timeline.get_mut(idx) {
            b.retried += 1;
        }
    }

    fn merge(&mut self, o: Totals) {
        let _ = self.latency.add(&o.latency);
        let _ = self.send_lag.add(&o.send_lag);
        self.ok += o.ok;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in o.error_examples {
            self.error_examples.entry(k).or_insert(v);
        }
        for (k, v) in o.retried {
            *self.retried.entry(k).or_default() += v;
        }
        for (k, v) in o.ops {
            *self.ops.entry(k).or_default() += v;
        }
        for (k, v) in o.replicas {
            *self.replicas.entry(k).or_default() += v;
        }
        self.unattributed += o.unattributed;
        self.bytes += o.bytes;
        for (a, b) in self.timeline.iter_mut().zip(o.timeline) {
            a.ok += b.ok;
            a.errors += b.errors;
            a.retried += b.retried;
            let _ = a.latency.add(&b.latency);
            for (k, v) in b.replicas {
                *a.replicas.entry(k).or_default() += v;
            }
        }
        self.last_completion = self.last_completion.max(o.last_completion);
        let w = &mut self.watches;
        w.opened += o.watches.opened;
        w.held_to_end += o.watches.held_to_end;
        w.ended_early += o.watches.ended_early;
        w.events += o.watches.events;
        for (k, v) in o.watches.errors {
            *w.errors.entry(k).or_default() += v;
        }
        for (k, v) in o.watches.per_replica {
            *w.per_replica.entry(k).or_default() += v;
        }
    }

    /// All failures, including unfinished requests.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Counters read by the live progress line.
#[derive(Debug, Default)]
pub struct Live {
    /// Measured successful requests.
    pub ok: AtomicU64,
    /// Measured failed requests.
    pub errors: AtomicU64,
    /// Requests sent during warm-up (not recorded).
    pub warmup: AtomicU64,
    /// Measured requests currently in flight.
    pub in_flight: AtomicI64,
    /// Open loop: measured requests due before the end that were never sent.
    pub never_sent: AtomicU64,
    /// Watch streams currently open.
    pub watches_open: AtomicI64,
}

/// Thread-safe recorder for one run.
#[derive(Debug)]
pub struct Stats {
    shards: Vec<Mutex<Totals>>,
    /// Live counters for progress output.
    pub live: Live,
}

impl Stats {
    /// A recorder for a measured phase of `duration`, with `shards` independent shards.
    pub fn new(duration: Duration, shards: usize) -> Self {
        Self::with_resolution(duration, shards, Duration::from_secs(1))
    }

    /// Like [`Stats::new`], with timeline buckets of `finest` where the run is short
    /// enough (a fault run cuts its windows between actions at bucket boundaries).
    pub fn with_resolution(duration: Duration, shards: usize, finest: Duration) -> Self {
        let finest = finest.max(Duration::from_millis(1));
        let fit = duration.as_secs_f64() / finest.as_secs_f64();
        let (buckets, width) = if fit.ceil() <= MAX_BUCKETS as f64 {
            ((fit.ceil() as usize).max(1), finest)
        } else {
            (MAX_BUCKETS, duration.div_f64(MAX_BUCKETS as f64))
        };
        Self {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(Totals::new(buckets, width)))
                .collect(),
            live: Live::default(),
        }
    }

    fn with_shard<R>(&self, client: usize, f: impl FnOnce(&mut Totals) -> R) -> Option<R> {
        let shard = self.shards.get(client % self.shards.len())?;
        // A poisoned shard only means another recorder panicked; the data is still usable.
        let mut g = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(f(&mut g))
    }

    /// Records that client `client` sent a measured request again on `signal`, at
    /// `since_start` (by the time of the retry, not of the first send).
    pub fn retried(&self, client: usize, signal: Signal, since_start: Duration) {
        self.with_shard(client, |t| t.record_retry(signal, since_start));
    }

    /// Records one measured request of client `client`.
    pub fn record(&self, client: usize, sample: Sample) {
        match sample.outcome {
            Outcome::Ok => self.live.ok.fetch_add(1, Ordering::Relaxed),
            Outcome::Failed(_) => self.live.errors.fetch_add(1, Ordering::Relaxed),
        };
        self.with_shard(client, |t| t.record(sample));
    }

    /// Updates the watch counters of client `client`.
    pub fn watch(&self, client: usize, f: impl FnOnce(&mut WatchStats)) {
        self.with_shard(client, |t| f(&mut t.watches));
    }

    /// Adds requests that were still in flight `grace` after the end, and requests that
    /// were due but never sent, as `unfinished`.
    pub fn add_unfinished(&self, in_flight: u64, never_sent: u64, grace: Duration) {
        let n = in_flight + never_sent;
        if n == 0 {
            return;
        }
        let example = format!(
            "{in_flight} still in flight {} after the end, {never_sent} due but never sent \
             (all --max-inflight slots held, or the generator fell behind: see send lag)",
            crate::units::format_duration(grace)
        );
        self.with_shard(0, |t| {
            *t.errors.entry(ErrorKind::Unfinished).or_default() += n;
            t.error_examples
                .entry(ErrorKind::Unfinished)
                .or_insert(example);
        });
    }

    /// Merges all shards into the run's totals.
    pub fn finish(&self) -> Option<Totals> {
        let mut shards = self.shards.iter().map(|s| {
            s.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        });
        let mut total = shards.next()?;
        for s in shards {
            total.merge(s);
        }
        Some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, outcome: Outcome, replica: Option<&str>, at: u64) -> Sample {
        Sample {
            op: Op::Get,
            since_start: Duration::from_millis(at),
            latency: Duration::from_millis(ms),
            outcome,
            replica: replica.map(str::to_owned),
            bytes: 10,
            send_lag: Duration::ZERO,
            error: None,
        }
    }

    #[test]
    fn records_and_merges() {
        let s = Stats::new(Duration::from_secs(3), 2);
        s.record(0, sample(10, Outcome::Ok, Some("a"), 100));
        s.record(1, sample(20, Outcome::Ok, Some("b"), 1500));
        s.record(
            1,
            sample(5, Outcome::Failed(ErrorKind::Status(503)), Some("b"), 2500),
        );
        s.record(
            0,
            sample(5, Outcome::Failed(ErrorKind::Connect), None, 2600),
        );
        s.add_unfinished(1, 1, Duration::from_secs(1));
        s.watch(1, |w| w.opened += 1);
        let t = s
            .finish()
            .unwrap_or_else(|| Totals::new(0, Duration::from_secs(1)));
        assert_eq!(t.ok, 2);
        assert_eq!(t.latency.len(), 2);
        assert_eq!(t.error_count(), 4);
        assert_eq!(t.errors[&ErrorKind::Unfinished], 2);
        assert_eq!(t.replicas["b"], 2);
        assert_eq!(
            t.unattributed, 0,
            "connect errors have no response to attribute"
        );
        assert_eq!(t.timeline.len(), 3);
        assert_eq!(
            (t.timeline[0].ok, t.timeline[1].ok, t.timeline[2].errors),
            (1, 1, 2)
        );
        // Per bucket, which replica answered (any status): the share timeline.
        assert_eq!(t.timeline[1].replicas.get("b"), Some(&1));
        assert_eq!(t.timeline[2].replicas.get("b"), Some(&1));
        assert!(!t.timeline[2].replicas.contains_key("a"));
        assert_eq!(t.watches.opened, 1);
        assert_eq!(t.last_completion, Duration::from_millis(2605));
        assert_eq!(s.live.ok.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn long_runs_get_wide_buckets() {
        let s = Stats::new(Duration::from_secs(3600), 1);
        let t = s
            .finish()
            .unwrap_or_else(|| Totals::new(0, Duration::from_secs(1)));
        assert_eq!(t.timeline.len(), MAX_BUCKETS);
        assert_eq!(t.bucket_width, Duration::from_secs(6));
    }
}
