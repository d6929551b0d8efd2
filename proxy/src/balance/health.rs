//! The health of one replica: an explicit state machine fed by passive failures, active
//! probes and drain signals.
//!
//! ```text
//!            passive failures ≥ threshold          ejection over
//!  Healthy ─────────────────────────────▶ Ejected ──────────────▶ Probation
//!   ▲  ▲ ramp over                            ▲    failure (longer)   │ success (request
//!   │  └──────── SlowStart ◀──────────────────┼───────────────────────┘  or probe)
//!   │               ▲ ▲                       │
//!   │   probes ok   │ │ new replica (not all new)
//!   │   ≥ threshold │ └────────────────────────
//!   │            Unready ◀── probes failed ≥ threshold (from any serving state)
//!   │
//!   └── Draining ◀── endpoint terminating, or kube-apiserver's shutdown 429 (any state)
//! ```
//!
//! Each state owns only its data. A replica gets new requests only when it serves
//! (`Healthy`, or `SlowStart` with a share that ramps up); in `Probation` one trial
//! request at a time decides; `Ejected`, `Unready` and `Draining` get none, while what
//! is in flight finishes. Transitions happen under a small lock on events (rare); the
//! pick path reads one atomic word per replica ([`Admission`]).
//!
//! Times are nanoseconds of [`now_nanos`], passed in, so the machine is a pure function
//! of its inputs and tested without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use apigate_control::snapshot::{Ejection, SlowStart};

/// Monotonic nanoseconds since the first call, shared by all health state. Read from
/// tokio's clock, so tests that pause it drive health and probers alike.
pub fn now_nanos() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let elapsed = Instant::now().saturating_duration_since(epoch);
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A replica that announced its shutdown gets no new request for this long; then one
/// request or probe decides (probation), so that a replica that restarted at the same
/// address comes back even where nothing probes it.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(60);

/// How long a probation trial may stay without a verdict before another request may
/// try (a trial whose client went away decides nothing).
const TRIAL_PATIENCE: Duration = Duration::from_secs(10);

/// Why a replica drains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainCause {
    /// Its endpoint is terminating (Kubernetes).
    Terminating,
    /// It answered kube-apiserver's shutdown 429 (`Retry-After` and `Connection: close`,
    /// or a 429 confirmed by a failing probe).
    Shutdown,
}

impl DrainCause {
    /// Label.
    pub fn as_str(self) -> &'static str {
        match self {
            DrainCause::Terminating => "terminating",
            DrainCause::Shutdown => "shutdown",
        }
    }
}

/// A replica's state; each variant owns only its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Serving its full share. `failures`: passive failures in a row.
    Healthy {
        /// Passive failures in a row.
        failures: u32,
    },
    /// Serving a share that ramps up from `since` (new, or back from ejection or
    /// unreadiness).
    SlowStart {
        /// Start of the ramp.
        since: u64,
        /// Passive failures in a row.
        failures: u32,
    },
    /// Passive failures ejected it until `until`; `streak` ejections in a row.
    Ejected {
        /// End of the ejection.
        until: u64,
        /// Ejections in a row (drives the back-off).
        streak: u32,
    },
    /// Half-open after an ejection: the next request (or probe) decides. A trial is
    /// outstanding until `trial_until`.
    Probation {
        /// Ejections in a row so far.
        streak: u32,
        /// While a trial request is out (0: none).
        trial_until: u64,
    },
    /// Probes failed `unhealthyThreshold` times in a row.
    Unready {
        /// Since when.
        since: u64,
    },
    /// Going away: no new requests; in-flight requests and open watches continue.
    Draining {
        /// Since when.
        since: u64,
        /// Why.
        cause: DrainCause,
    },
}

impl State {
    /// Metric and log label.
    pub fn label(&self) -> &'static str {
        match self {
            State::Healthy { .. } => "healthy",
            State::SlowStart { .. } => "slow_start",
            State::Ejected { .. } => "ejected",
            State::Probation { .. } => "probation",
            State::Unready { .. } => "unready",
            State::Draining { .. } => "draining",
        }
    }

    /// Every label, for metrics that show one state at a time.
    pub const LABELS: [&'static str; 6] = [
        "healthy",
        "slow_start",
        "ejected",
        "probation",
        "unready",
        "draining",
    ];

    /// The state after time alone has passed: a ramp completes, an ejection ends.
    fn aged(self, now: u64, slow_start: &SlowStart) -> State {
        match self {
            State::SlowStart { since, failures }
                if now.saturating_sub(since) >= nanos(slow_start.window) =>
            {
                State::Healthy { failures }
            }
            State::Ejected { until, streak } if now >= until => State::Probation {
                streak,
                trial_until: 0,
            },
            State::Draining {
                since,
                cause: DrainCause::Shutdown,
            } if now.saturating_sub(since) >= nanos(SHUTDOWN_DRAIN) => State::Probation {
                streak: 0,
                trial_until: 0,
            },
            other => other,
        }
    }
}

/// What the pick path may do with a replica now, read without a lock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// Serving with this share of a full replica (1.0, or less while ramping up).
    Serving(f64),
    /// In probation with no trial out: one request may be sent (and must claim it).
    Trial,
    /// No new requests (ejected, trial out, unready, draining).
    Out,
}

/// Encoding of the admission word: kind in the top 3 bits, a time in the rest.
const KIND_SHIFT: u32 = 61;
const TIME_MASK: u64 = (1 << KIND_SHIFT) - 1;
const K_HEALTHY: u64 = 0;
const K_SLOW_START: u64 = 1;
const K_EJECTED: u64 = 2;
const K_PROBATION: u64 = 3;
const K_OUT: u64 = 4;

/// The admission word of a state. A healthy replica with no failures is exactly 0, so
/// the common success needs no lock.
fn word(state: &State) -> u64 {
    let (kind, time) = match *state {
        State::Healthy { failures } => (K_HEALTHY, u64::from(failures)),
        State::SlowStart { since, .. } => (K_SLOW_START, since),
        State::Ejected { until, .. } => (K_EJECTED, until),
        // Out like an ejection, which ends in probation.
        State::Draining {
            since,
            cause: DrainCause::Shutdown,
        } => (K_EJECTED, since.saturating_add(nanos(SHUTDOWN_DRAIN))),
        State::Probation { trial_until, .. } => (K_PROBATION, trial_until),
        State::Unready { .. } | State::Draining { .. } => (K_OUT, 0),
    };
    (kind << KIND_SHIFT) | (time & TIME_MASK)
}

/// The share of a replica ramping up since `since`: linear from the minimum weight.
pub fn ramp(now: u64, since: u64, slow_start: &SlowStart) -> f64 {
    let window = nanos(slow_start.window);
    if window == 0 {
        return 1.0;
    }
    let done = (now.saturating_sub(since) as f64 / window as f64).min(1.0);
    let min = f64::from(slow_start.min_weight_percent) / 100.0;
    min + (1.0 - min) * done
}

/// What a passive failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Counted, below the threshold (or ejecting it would pass the route's cap).
    Counted,
    /// The replica is now ejected for this long.
    Ejected(Duration),
}

/// Active probe results in a row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeRun {
    /// Passed in a row.
    pub passed: u32,
    /// Failed in a row.
    pub failed: u32,
}

/// A state change, for the one log line and metric per transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
}

#[derive(Debug)]
struct Inner {
    state: State,
    probes: ProbeRun,
    /// When the last ejection ended, to let the back-off streak decay.
    last_ejection_end: u64,
    /// The streak of the last ejection: a replica that comes back and fails again
    /// before it has been quiet for the longest ejection goes on doubling.
    last_streak: u32,
}

impl Inner {
    /// Eject after `streak` ejections in a row: the base time, doubled per repeat up to
    /// the maximum. A replica clean for the longest ejection starts over at the base.
    fn eject(&mut self, now: u64, streak: u32, policy: &Ejection) -> (State, Duration) {
        let quiet = now.saturating_sub(self.last_ejection_end);
        let streak = if self.last_ejection_end == 0 || quiet > nanos(policy.max) {
            1
        } else {
            streak.max(self.last_streak).saturating_add(1)
        };
        self.last_streak = streak;
        let factor = 1u32 << streak.saturating_sub(1).min(16);
        let duration = policy.base.saturating_mul(factor).min(policy.max);
        let until = now.saturating_add(nanos(duration));
        self.last_ejection_end = until;
        (State::Ejected { until, streak }, duration)
    }
}

/// What a probe's verdict is judged against: the route's thresholds, its ejection
/// policy (a failed probe in probation ejects again, like a failed trial request) and
/// its ramp.
#[derive(Debug, Clone, Copy)]
pub struct ProbeRules<'a> {
    /// Passed probes in a row that make an unready replica ready.
    pub healthy_threshold: u32,
    /// Failed probes in a row that make a replica unready.
    pub unhealthy_threshold: u32,
    /// Passive ejection, for a failed probe in probation.
    pub ejection: &'a Ejection,
    /// The ramp of a replica coming back.
    pub slow_start: &'a SlowStart,
}

/// Health of one replica, shared by every route and snapshot that uses it.
#[derive(Debug)]
pub struct Health {
    admission: AtomicU64,
    inner: Mutex<Inner>,
}

impl Health {
    /// A replica that serves at once: `ramp` puts it in slow start (a replica added
    /// beside serving ones), otherwise it is healthy (every replica is new).
    pub fn new(now: u64, ramp: bool) -> Self {
        let state = if ramp {
            State::SlowStart {
                since: now,
                failures: 0,
            }
        } else {
            State::Healthy { failures: 0 }
        };
        Health {
            admission: AtomicU64::new(word(&state)),
            inner: Mutex::new(Inner {
                state,
                probes: ProbeRun::default(),
                last_ejection_end: 0,
                last_streak: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(inner) => inner,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The current state (time applied).
    pub fn state(&self, now: u64, slow_start: &SlowStart) -> State {
        self.lock().state.aged(now, slow_start)
    }

    /// The probe results in a row.
    pub fn probes(&self) -> ProbeRun {
        self.lock().probes
    }

    /// What the pick path may do now. One atomic load.
    pub fn admission(&self, now: u64, slow_start: &SlowStart) -> Admission {
        let word = self.admission.load(Ordering::Acquire);
        let time = word & TIME_MASK;
        match word >> KIND_SHIFT {
            K_HEALTHY => Admission::Serving(1.0),
            K_SLOW_START => Admission::Serving(ramp(now, time, slow_start)),
            K_EJECTED if now >= time => Admission::Trial,
            K_PROBATION if now >= time => Admission::Trial,
            _ => Admission::Out,
        }
    }

    /// The share of new requests it takes now: 1 when serving fully, the ramp while in
    /// slow start, 0 when it takes none (a probation trial is not a share).
    pub fn weight(&self, now: u64, slow_start: &SlowStart) -> f64 {
        match self.admission(now, slow_start) {
            Admission::Serving(w) => w,
            Admission::Trial | Admission::Out => 0.0,
        }
    }

    /// A replica added with the rest of its route: no ramp (slow start is for a replica
    /// joining others that already serve).
    pub fn settle(&self, now: u64, slow_start: &SlowStart) {
        self.transition(now, slow_start, |_, state| match state {
            State::SlowStart { failures, .. } => State::Healthy { failures },
            other => other,
        });
    }

    /// Whether the replica is ejected or in probation (counted against the route's cap
    /// on ejections).
    pub fn ejected(&self) -> bool {
        matches!(
            self.lock().state,
            State::Ejected { .. } | State::Probation { .. }
        )
    }

    /// Apply `change` to the state (aged to `now`); returns the transition, if any.
    fn transition(
        &self,
        now: u64,
        slow_start: &SlowStart,
        change: impl FnOnce(&mut Inner, State) -> State,
    ) -> Option<Transition> {
        let mut inner = self.lock();
        let from = inner.state.aged(now, slow_start);
        let to = change(&mut inner, from);
        inner.state = to;
        self.admission.store(word(&to), Ordering::Release);
        (from.label() != to.label()).then_some(Transition { from, to })
    }

    /// Claim the probation trial: true for the one request that may go now.
    pub fn claim_trial(&self, now: u64, slow_start: &SlowStart) -> bool {
        let mut claimed = false;
        self.transition(now, slow_start, |_, state| match state {
            State::Probation {
                streak,
                trial_until,
            } if now >= trial_until => {
                claimed = true;
                State::Probation {
                    streak,
                    trial_until: now.saturating_add(nanos(TRIAL_PATIENCE)),
                }
            }
            other => other,
        });
        claimed
    }

    /// A request got an answer from the replica (any status).
    pub fn record_success(&self, now: u64, slow_start: &SlowStart) -> Option<Transition> {
        // The common case, healthy without failures, needs no lock.
        if self.admission.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.transition(now, slow_start, |_, state| match state {
            State::Healthy { .. } => State::Healthy { failures: 0 },
            State::SlowStart { since, .. } => State::SlowStart { since, failures: 0 },
            // The trial passed: back, ramping up.
            State::Probation { .. } => State::SlowStart {
                since: now,
                failures: 0,
            },
            other => other,
        })
    }

    /// A failure that counts against the replica. `may_eject` is false when ejecting it
    /// would pass the route's cap on ejected replicas.
    pub fn record_failure(
        &self,
        now: u64,
        policy: &Ejection,
        slow_start: &SlowStart,
        may_eject: bool,
    ) -> (FailureOutcome, Option<Transition>) {
        let mut outcome = FailureOutcome::Counted;
        let transition = self.transition(now, slow_start, |inner, state| {
            let mut eject = |inner: &mut Inner, streak: u32| {
                let (state, duration) = inner.eject(now, streak, policy);
                outcome = FailureOutcome::Ejected(duration);
                state
            };
            match state {
                State::Healthy { failures } | State::SlowStart { failures, .. }
                    if failures.saturating_add(1) >= policy.consecutive_failures && may_eject =>
                {
                    eject(inner, 0)
                }
                State::Healthy { failures } => State::Healthy {
                    failures: failures.saturating_add(1),
                },
                State::SlowStart { since, failures } => State::SlowStart {
                    since,
                    failures: failures.saturating_add(1),
                },
                // The trial failed: ejected again, for longer.
                State::Probation { streak, .. } => eject(inner, streak),
                other => other,
            }
        });
        (outcome, transition)
    }

    /// An active probe's verdict: `passed` or not, against the route's rules.
    /// `decisive` makes one failure enough (the replica announced its shutdown).
    pub fn record_probe(
        &self,
        now: u64,
        passed: bool,
        decisive: bool,
        rules: &ProbeRules<'_>,
    ) -> Option<Transition> {
        self.transition(now, rules.slow_start, |inner, state| {
            if passed {
                inner.probes = ProbeRun {
                    passed: inner.probes.passed.saturating_add(1),
                    failed: 0,
                };
                let back = inner.probes.passed >= rules.healthy_threshold;
                match state {
                    State::Unready { .. }
                    | State::Draining {
                        cause: DrainCause::Shutdown,
                        ..
                    } if back => State::SlowStart {
                        since: now,
                        failures: 0,
                    },
                    // A probe may decide probation too.
                    State::Probation { .. } => State::SlowStart {
                        since: now,
                        failures: 0,
                    },
                    other => other,
                }
            } else {
                inner.probes = ProbeRun {
                    passed: 0,
                    failed: inner.probes.failed.saturating_add(1),
                };
                let gone = inner.probes.failed >= rules.unhealthy_threshold;
                match state {
                    State::Draining { .. } | State::Unready { .. } => state,
                    _ if decisive => State::Draining {
                        since: now,
                        cause: DrainCause::Shutdown,
                    },
                    _ if gone => State::Unready { since: now },
                    // The probe was the trial, and it failed: ejected again, longer.
                    State::Probation { streak, .. } => inner.eject(now, streak, rules.ejection).0,
                    other => other,
                }
            }
        })
    }

    /// Nothing probes the replica any more (its routes turned checks off): an unready
    /// verdict no longer stands, so it comes back, ramping up.
    pub fn unprobed(&self, now: u64, slow_start: &SlowStart) -> Option<Transition> {
        self.transition(now, slow_start, |_, state| match state {
            State::Unready { .. } => State::SlowStart {
                since: now,
                failures: 0,
            },
            other => other,
        })
    }

    /// No new requests: the endpoint is terminating, or the replica announced its
    /// shutdown.
    pub fn drain(&self, now: u64, cause: DrainCause, slow_start: &SlowStart) -> Option<Transition> {
        self.transition(now, slow_start, |inner, state| match state {
            State::Draining { .. } => state,
            _ => {
                // Coming back takes healthyThreshold passes from here on.
                inner.probes = ProbeRun::default();
                State::Draining { since: now, cause }
            }
        })
    }

    /// The endpoint is ready again after it was terminating: back, ramping up.
    pub fn undrain(&self, now: u64, slow_start: &SlowStart) -> Option<Transition> {
        self.transition(now, slow_start, |_, state| match state {
            State::Draining {
                cause: DrainCause::Terminating,
                ..
            } => State::SlowStart {
                since: now,
                failures: 0,
            },
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const POLICY: Ejection = Ejection {
        consecutive_failures: 3,
        base: Duration::from_secs(1),
        max: Duration::from_secs(4),
        max_ejected_percent: 10,
    };
    const RAMP: SlowStart = SlowStart {
        window: Duration::from_secs(10),
        min_weight_percent: 10,
    };

    fn fail(h: &Health, now: u64) -> FailureOutcome {
        h.record_failure(now, &POLICY, &RAMP, true).0
    }

    fn probe(
        h: &Health,
        now: u64,
        passed: bool,
        (healthy_threshold, unhealthy_threshold): (u32, u32),
        decisive: bool,
    ) -> Option<Transition> {
        let rules = ProbeRules {
            healthy_threshold,
            unhealthy_threshold,
            ejection: &POLICY,
            slow_start: &RAMP,
        };
        h.record_probe(now, passed, decisive, &rules)
    }

    #[test]
    fn ejects_after_threshold_then_probation_decides() {
        let h = Health::new(0, false);
        let t = 10 * S;
        assert_eq!(fail(&h, t), FailureOutcome::Counted);
        assert_eq!(fail(&h, t), FailureOutcome::Counted);
        assert_eq!(fail(&h, t), FailureOutcome::Ejected(Duration::from_secs(1)));
        assert_eq!(h.admission(t, &RAMP), Admission::Out);
        // Ejection over: one trial may go, and only one.
        assert_eq!(h.admission(t + S, &RAMP), Admission::Trial);
        assert_eq!(h.state(t + S, &RAMP).label(), "probation");
        assert!(h.claim_trial(t + S, &RAMP));
        assert!(!h.claim_trial(t + S, &RAMP), "one trial at a time");
        assert_eq!(h.admission(t + S, &RAMP), Admission::Out);
        // The trial succeeds: back, ramping up from the minimum weight.
        let back = h.record_success(t + 2 * S, &RAMP).unwrap();
        assert_eq!(back.from.label(), "probation");
        assert_eq!(
            back.to,
            State::SlowStart {
                since: t + 2 * S,
                failures: 0
            }
        );
        assert_eq!(h.admission(t + 2 * S, &RAMP), Admission::Serving(0.1));
        assert_eq!(h.admission(t + 7 * S, &RAMP), Admission::Serving(0.55));
        assert_eq!(h.state(t + 12 * S, &RAMP).label(), "healthy");
    }

    #[test]
    fn a_failed_trial_ejects_for_longer_and_a_quiet_replica_starts_over() {
        let h = Health::new(0, false);
        let mut t = 10 * S;
        let mut durations = Vec::new();
        for _ in 0..3 {
            fail(&h, t);
        }
        durations.push(h.state(t, &RAMP));
        for _ in 0..3 {
            t += 5 * S; // past the ejection: in probation
            assert!(h.claim_trial(t, &RAMP));
            if let FailureOutcome::Ejected(d) = fail(&h, t) {
                durations.push(State::Ejected {
                    until: t + nanos(d),
                    streak: 0,
                });
            }
        }
        let lengths: Vec<u64> = durations
            .iter()
            .zip([10 * S, 15 * S, 20 * S, 25 * S])
            .map(|(s, at)| match s {
                State::Ejected { until, .. } => (until - at) / S,
                _ => 0,
            })
            .collect();
        assert_eq!(lengths, vec![1, 2, 4, 4], "doubling up to the cap");
        // Back, but failing again soon: the back-off does not start over.
        t += 5 * S;
        assert!(h.claim_trial(t, &RAMP));
        h.record_success(t, &RAMP);
        t += S;
        for _ in 0..2 {
            fail(&h, t);
        }
        assert_eq!(fail(&h, t), FailureOutcome::Ejected(Duration::from_secs(4)));
        // Back and quiet for longer than the cap: the next ejection is short again.
        t += 5 * S;
        assert!(h.claim_trial(t, &RAMP));
        h.record_success(t, &RAMP);
        t += 100 * S;
        for _ in 0..2 {
            fail(&h, t);
        }
        assert_eq!(fail(&h, t), FailureOutcome::Ejected(Duration::from_secs(1)));
    }

    #[test]
    fn the_route_cap_keeps_a_replica_in_service() {
        let h = Health::new(0, false);
        for _ in 0..10 {
            assert_eq!(
                h.record_failure(S, &POLICY, &RAMP, false).0,
                FailureOutcome::Counted
            );
        }
        assert_eq!(h.admission(S, &RAMP), Admission::Serving(1.0));
    }

    #[test]
    fn probes_make_a_replica_unready_and_ready_again_through_slow_start() {
        let h = Health::new(0, false);
        let thresholds = (2, 3);
        for i in 0..2 {
            assert!(probe(&h, i * S, false, thresholds, false).is_none());
            assert_eq!(h.admission(i * S, &RAMP), Admission::Serving(1.0));
        }
        let out = probe(&h, 2 * S, false, thresholds, false).unwrap();
        assert_eq!(out.to, State::Unready { since: 2 * S });
        assert_eq!(h.admission(3 * S, &RAMP), Admission::Out);
        assert!(probe(&h, 3 * S, true, thresholds, false).is_none());
        let back = probe(&h, 4 * S, true, thresholds, false).unwrap();
        assert_eq!(back.to.label(), "slow_start");
        assert_eq!(h.admission(4 * S, &RAMP), Admission::Serving(0.1));
    }

    #[test]
    fn a_probe_decides_probation_and_a_shutdown_drains_at_once() {
        let h = Health::new(0, false);
        for _ in 0..3 {
            fail(&h, S);
        }
        let decided = probe(&h, 3 * S, true, (2, 3), false).unwrap();
        assert_eq!(
            (decided.from.label(), decided.to.label()),
            ("probation", "slow_start")
        );
        // A failing probe after a shutdown 429 is enough on its own.
        let drained = probe(&h, 4 * S, false, (2, 3), true).unwrap();
        assert_eq!(
            drained.to,
            State::Draining {
                since: 4 * S,
                cause: DrainCause::Shutdown
            }
        );
        // Passive failures of a draining replica change nothing.
        assert_eq!(fail(&h, 5 * S), FailureOutcome::Counted);
        assert_eq!(h.admission(5 * S, &RAMP), Admission::Out);
        // Restarted and ready again: back through slow start.
        probe(&h, 6 * S, true, (2, 3), false);
        let back = probe(&h, 7 * S, true, (2, 3), false).unwrap();
        assert_eq!(back.to.label(), "slow_start");
    }

    #[test]
    fn a_failed_probe_in_probation_ejects_again_for_longer() {
        let h = Health::new(0, false);
        for _ in 0..3 {
            fail(&h, 10 * S);
        }
        assert_eq!(h.state(11 * S, &RAMP).label(), "probation");
        let again = probe(&h, 11 * S, false, (2, 3), false).unwrap();
        assert_eq!(
            again.to,
            State::Ejected {
                until: 13 * S,
                streak: 2
            },
            "twice the base ejection"
        );
    }

    #[test]
    fn a_shutdown_drain_ends_in_probation_and_never_counts_as_an_ejection() {
        let h = Health::new(0, false);
        h.drain(S, DrainCause::Shutdown, &RAMP);
        assert!(!h.ejected(), "not counted against the route's ejection cap");
        assert_eq!(h.admission(30 * S, &RAMP), Admission::Out);
        // Nothing said it is back: after a minute one request or probe decides.
        assert_eq!(h.admission(61 * S, &RAMP), Admission::Trial);
        assert_eq!(h.state(61 * S, &RAMP).label(), "probation");
        assert!(h.claim_trial(61 * S, &RAMP));
        assert_eq!(
            h.record_success(62 * S, &RAMP).unwrap().to.label(),
            "slow_start"
        );
    }

    #[test]
    fn an_unready_replica_does_not_count_against_the_ejection_cap() {
        let h = Health::new(0, false);
        for i in 0..3 {
            probe(&h, i * S, false, (2, 3), false);
        }
        assert_eq!(h.state(3 * S, &RAMP).label(), "unready");
        assert!(!h.ejected());
    }

    #[test]
    fn a_replica_that_announced_its_shutdown_returns_after_healthy_threshold_passes() {
        let h = Health::new(0, false);
        // Passes before the drain do not count towards coming back.
        probe(&h, 0, true, (2, 3), false);
        h.drain(S, DrainCause::Shutdown, &RAMP);
        assert!(probe(&h, 2 * S, true, (2, 3), false).is_none());
        assert_eq!(h.state(2 * S, &RAMP).label(), "draining");
        let back = probe(&h, 3 * S, true, (2, 3), false).unwrap();
        assert_eq!(back.to.label(), "slow_start");
    }

    #[test]
    fn an_unready_replica_nobody_probes_any_more_comes_back() {
        let h = Health::new(0, false);
        for i in 0..3 {
            probe(&h, i * S, false, (2, 3), false);
        }
        assert_eq!(h.state(3 * S, &RAMP).label(), "unready");
        assert_eq!(h.unprobed(4 * S, &RAMP).unwrap().to.label(), "slow_start");
        // Drains are not probe verdicts: they stay.
        h.drain(5 * S, DrainCause::Terminating, &RAMP);
        assert!(h.unprobed(6 * S, &RAMP).is_none());
    }

    #[test]
    fn a_terminating_endpoint_drains_until_it_is_ready_again() {
        let h = Health::new(0, true);
        let drained = h.drain(S, DrainCause::Terminating, &RAMP).unwrap();
        assert_eq!(drained.from.label(), "slow_start");
        assert_eq!(h.admission(S, &RAMP), Admission::Out);
        // Probes do not bring back a terminating endpoint.
        probe(&h, 2 * S, true, (1, 1), false);
        assert_eq!(h.state(2 * S, &RAMP).label(), "draining");
        assert_eq!(h.undrain(3 * S, &RAMP).unwrap().to.label(), "slow_start");
    }

    #[test]
    fn a_new_replica_ramps_unless_every_replica_is_new() {
        assert_eq!(
            Health::new(0, false).admission(0, &RAMP),
            Admission::Serving(1.0)
        );
        let ramping = Health::new(0, true);
        assert_eq!(ramping.admission(0, &RAMP), Admission::Serving(0.1));
        assert_eq!(ramping.admission(10 * S, &RAMP), Admission::Serving(1.0));
        let off = SlowStart {
            window: Duration::ZERO,
            min_weight_percent: 10,
        };
        assert_eq!(ramping.admission(0, &off), Admission::Serving(1.0));
    }
}
