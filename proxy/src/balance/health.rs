//! Passive health: consecutive failures eject a backend for a growing back-off.
//!
//! The hot path only reads one atomic (`ejected_until`); failures take a small lock to
//! decide an ejection, successes reset an atomic counter. Times are nanoseconds since a
//! process-wide epoch so they fit in atomics.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use apigate_control::snapshot::Ejection;

/// Monotonic nanoseconds since the first call, shared by all health state.
pub fn now_nanos() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Health of one backend, shared by every route and snapshot that uses it.
#[derive(Debug, Default)]
pub struct Health {
    consecutive_failures: AtomicU32,
    ejected_until: AtomicU64,
    history: Mutex<EjectionHistory>,
}

#[derive(Debug, Default)]
struct EjectionHistory {
    /// Ejections in a row without a quiet period; drives the back-off.
    streak: u32,
    /// When the last ejection ended (nanos), to let the streak decay.
    last_end: u64,
}

/// What a recorded failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Counted, below the threshold.
    Counted,
    /// The backend is now ejected for this long.
    Ejected(Duration),
}

impl Health {
    /// Whether new requests may go to this backend at `now` (nanos).
    pub fn available(&self, now: u64) -> bool {
        now >= self.ejected_until.load(Ordering::Relaxed)
    }

    /// Whether the backend is ejected at `now` (for metrics).
    pub fn ejected(&self, now: u64) -> bool {
        !self.available(now)
    }

    /// A request got a proper response: the failure streak ends.
    pub fn record_success(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// A connect failure or gateway error. Ejects after `policy.consecutive_failures` in a
    /// row; each ejection that follows soon after the previous one doubles the time, up to
    /// `policy.max`. A backend that stays clean for `policy.max` starts over at `policy.base`.
    pub fn record_failure(&self, now: u64, policy: &Ejection) -> FailureOutcome {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < policy.consecutive_failures || !self.available(now) {
            return FailureOutcome::Counted;
        }
        let Ok(mut history) = self.history.lock() else {
            return FailureOutcome::Counted;
        };
        // Another thread may have ejected it while we waited for the lock.
        if !self.available(now) {
            return FailureOutcome::Counted;
        }
        let quiet = now.saturating_sub(history.last_end);
        if history.last_end == 0 || quiet > nanos(policy.max) {
            history.streak = 0;
        }
        history.streak = history.streak.saturating_add(1);
        let factor = 1u32 << history.streak.saturating_sub(1).min(16);
        let duration = policy.base.saturating_mul(factor).min(policy.max);
        let until = now.saturating_add(nanos(duration));
        history.last_end = until;
        self.ejected_until.store(until, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
        FailureOutcome::Ejected(duration)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Ejection = Ejection {
        consecutive_failures: 3,
        base: Duration::from_secs(1),
        max: Duration::from_secs(4),
    };
    const S: u64 = 1_000_000_000;

    #[test]
    fn ejects_after_threshold_and_recovers() {
        let h = Health::default();
        let t = 10 * S;
        assert_eq!(h.record_failure(t, &POLICY), FailureOutcome::Counted);
        assert_eq!(h.record_failure(t, &POLICY), FailureOutcome::Counted);
        assert_eq!(
            h.record_failure(t, &POLICY),
            FailureOutcome::Ejected(Duration::from_secs(1))
        );
        assert!(!h.available(t));
        assert!(h.available(t + S));
    }

    #[test]
    fn success_resets_the_streak_of_failures() {
        let h = Health::default();
        h.record_failure(S, &POLICY);
        h.record_failure(S, &POLICY);
        h.record_success();
        assert_eq!(h.record_failure(S, &POLICY), FailureOutcome::Counted);
        assert!(h.available(S));
    }

    #[test]
    fn back_off_grows_to_the_cap_and_decays_after_a_quiet_period() {
        let h = Health::default();
        let mut t = 10 * S;
        let mut durations = Vec::new();
        for _ in 0..4 {
            for _ in 0..3 {
                if let FailureOutcome::Ejected(d) = h.record_failure(t, &POLICY) {
                    durations.push(d.as_secs());
                }
            }
            t += 5 * S; // past the ejection, within the quiet period
        }
        assert_eq!(durations, vec![1, 2, 4, 4]);
        t += 100 * S;
        for _ in 0..2 {
            h.record_failure(t, &POLICY);
        }
        assert_eq!(
            h.record_failure(t, &POLICY),
            FailureOutcome::Ejected(Duration::from_secs(1))
        );
    }
}
