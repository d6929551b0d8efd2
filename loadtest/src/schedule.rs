//! When requests are sent: the open-loop (constant arrival) and closed-loop pacing, as
//! pure time arithmetic the runner follows.
//!
//! Open loop: client `c` with rate `r_c` sends its `i`-th request at
//! `t0 + offset_c + i / r_c`, whatever happened to earlier requests. Latency is then
//! measured from that *intended* time, so when the target stalls, every request that
//! should have been sent during the stall carries the stall in its latency (no
//! coordinated omission). Offsets stagger clients evenly over one interval so the
//! aggregate arrivals are smooth.
//!
//! Both modes share [`Tickets`], the bound on the total number of measured requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The open-loop timetable of one client.
#[derive(Debug, Clone, Copy)]
pub struct OpenSchedule {
    start: Instant,
    offset: Duration,
    interval: Duration,
}

impl OpenSchedule {
    /// Timetable for client `index` of `clients` whose share of the total `rate`
    /// (requests/s) is `weight` (weights sum to 1).
    pub fn new(start: Instant, rate: f64, weight: f64, index: usize, clients: usize) -> Self {
        let client_rate = (rate * weight).max(1e-9);
        let interval = Duration::from_secs_f64((1.0 / client_rate).min(1e6));
        let offset = interval.mul_f64(index as f64 / clients.max(1) as f64);
        Self {
            start,
            offset,
            interval,
        }
    }

    /// Intended send time of this client's `i`-th request.
    pub fn intended(&self, i: u64) -> Instant {
        let since = self.offset + Duration::from_secs_f64(self.interval.as_secs_f64() * i as f64);
        self.start + since
    }

    /// Time between two requests of this client.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

/// The phases of a run on the clock: warm-up from `start` to `measure_start`, measured
/// from there to `end`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// When the first request may be sent.
    pub start: Instant,
    /// When recording starts (end of warm-up).
    pub measure_start: Instant,
    /// When sending stops.
    pub end: Instant,
}

impl Window {
    /// The window for a warm-up and a measured duration starting at `start`.
    pub fn new(start: Instant, warmup: Duration, duration: Duration) -> Self {
        let measure_start = start + warmup;
        Self {
            start,
            measure_start,
            end: measure_start + duration,
        }
    }

    /// Whether a request intended (open loop) or sent (closed loop) at `t` is recorded.
    pub fn is_measured(&self, t: Instant) -> bool {
        t >= self.measure_start && t < self.end
    }
}

/// Shared bound on the total number of measured requests (`--max-requests`); unbounded
/// when created with `None` (the duration still bounds the run).
#[derive(Debug)]
pub struct Tickets {
    issued: AtomicU64,
    max: u64,
}

impl Tickets {
    /// A bound of `max` measured requests.
    pub fn new(max: Option<u64>) -> Self {
        Self {
            issued: AtomicU64::new(0),
            max: max.unwrap_or(u64::MAX),
        }
    }

    /// Takes one ticket; `false` once the bound is reached.
    pub fn take(&self) -> bool {
        self.issued.fetch_add(1, Ordering::Relaxed) < self.max
    }

    /// Whether the bound has been reached.
    pub fn exhausted(&self) -> bool {
        self.issued.load(Ordering::Relaxed) >= self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn open_schedule_is_even_and_staggered() {
        let t0 = Instant::now();
        // 3 clients sharing 300 req/s: each every 10 ms, staggered by 3.33 ms.
        let s: Vec<_> = (0..3)
            .map(|c| OpenSchedule::new(t0, 300.0, 1.0 / 3.0, c, 3))
            .collect();
        assert_eq!(s[0].interval(), Duration::from_millis(10));
        assert_eq!(s[0].intended(0), t0);
        assert_eq!(s[0].intended(100), t0 + Duration::from_secs(1));
        let d = s[1].intended(0) - t0;
        assert!(
            d > Duration::from_micros(3300) && d < Duration::from_micros(3400),
            "{d:?}"
        );
        // Over one second the union of the timetables has 300 arrivals.
        let end = t0 + Duration::from_secs(1);
        let n: usize = s
            .iter()
            .map(|s| (0..).take_while(|i| s.intended(*i) < end).count())
            .sum();
        assert_eq!(n, 300);
    }

    #[tokio::test(start_paused = true)]
    async fn window_and_tickets() {
        let t0 = Instant::now();
        let w = Window::new(t0, Duration::from_secs(1), Duration::from_secs(2));
        assert!(!w.is_measured(t0));
        assert!(w.is_measured(t0 + Duration::from_secs(1)));
        assert!(!w.is_measured(t0 + Duration::from_secs(3)));
        let t = Tickets::new(Some(2));
        assert!(t.take() && t.take());
        assert!(!t.take());
        assert!(t.exhausted());
        assert!(!Tickets::new(None).exhausted());
    }
}
