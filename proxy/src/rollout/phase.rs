//! The rollout lifecycle as an explicit state machine. Pure: time comes in as an
//! argument, so it is tested on tokio's paused clock.
//!
//! ```text
//!   Idle ──propose──▶ Baking ──gates pass at the deadline──▶ Idle (promoted)
//!                      │  ├──inconclusive at the deadline──▶ Baking (extended)
//!                      │  └──inconclusive at the limit──────▶ Held ──resume──▶ Idle (promoted)
//!                      └──a gate fails (Baking or Held)─────▶ Frozen ──resume──▶ Baking
//!                                                            Frozen ──abort───▶ Idle, or
//!                                                                    Baking (the queued one)
//! ```
//! A newer revision replaces the target of `Baking` or `Held` (the bake restarts) and
//! queues behind a `Frozen` one.

use std::collections::BTreeSet;
use std::time::Duration;

use apigate_control::rollout::Desired;
use apigate_control::RouteId;
use tokio::time::Instant;

/// A revision being rolled out.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Its number (counts policy revisions).
    pub revision: u64,
    /// Its policy.
    pub desired: Desired,
    /// The routes that run it first.
    pub canaries: BTreeSet<RouteId>,
}

/// Where the rollout is.
#[derive(Debug, Clone, Default)]
pub enum Phase {
    /// Every route serves the stable revision; nothing is pending.
    #[default]
    Idle,
    /// The canaries serve `target`; the gates judge until `deadline` (at most `limit`).
    Baking {
        /// The revision.
        target: Candidate,
        /// When the canaries got it.
        started: Instant,
        /// When a passing verdict promotes it.
        deadline: Instant,
        /// The last deadline extensions may reach.
        limit: Instant,
    },
    /// The gates stayed inconclusive until the limit: the canaries keep `target`, and
    /// nothing is promoted until an operator decides.
    Held {
        /// The revision.
        target: Candidate,
        /// Since when.
        since: Instant,
        /// Which gate lacked what.
        reason: String,
    },
    /// A gate failed: every route serves the stable revision again, and nothing is
    /// promoted until an operator resumes or aborts.
    Frozen {
        /// The revision that failed.
        target: Candidate,
        /// Since when.
        since: Instant,
        /// Gate, value and threshold.
        reason: String,
        /// The newest revision that arrived during the freeze.
        queued: Option<Box<Candidate>>,
    },
}

/// What a step did: one log line and one metric each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// A rollout began.
    Started,
    /// A newer revision replaced the one baking.
    Superseded,
    /// The gates were inconclusive at the deadline; the bake goes on.
    Extended,
    /// Inconclusive at the limit: holding.
    Held,
    /// A gate failed, or the revision cannot be staged.
    Frozen,
    /// A revision arrived during a freeze and waits.
    Queued,
    /// Promoted to every route (by the gates or an operator).
    Promoted,
    /// An operator resumed a frozen rollout.
    Resumed,
    /// An operator aborted it.
    Aborted,
}

impl Transition {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Transition::Started => "started",
            Transition::Superseded => "superseded",
            Transition::Extended => "extended",
            Transition::Held => "held",
            Transition::Frozen => "frozen",
            Transition::Queued => "queued",
            Transition::Promoted => "promoted",
            Transition::Resumed => "resumed",
            Transition::Aborted => "aborted",
        }
    }
}

/// An operator action that does not apply in the current phase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} while the rollout is {phase}")]
pub struct NotApplicable {
    /// The action.
    pub action: &'static str,
    /// The phase.
    pub phase: &'static str,
}

/// How long a bake lasts and how far it may be extended.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Bake time.
    pub bake: Duration,
    /// Longest total bake.
    pub max_bake: Duration,
}

/// A gate verdict as the machine needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// Promote at the deadline.
    Pass,
    /// Freeze now.
    Fail,
    /// Extend at the deadline, hold at the limit.
    Inconclusive,
}

impl Phase {
    /// Metric label and status name.
    pub fn label(&self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Baking { .. } => "baking",
            Phase::Held { .. } => "held",
            Phase::Frozen { .. } => "frozen",
        }
    }

    /// Every label, for resetting the phase gauge.
    pub const LABELS: [&'static str; 4] = ["idle", "baking", "held", "frozen"];

    /// The revision being rolled out, if any.
    pub fn target(&self) -> Option<&Candidate> {
        match self {
            Phase::Idle => None,
            Phase::Baking { target, .. }
            | Phase::Held { target, .. }
            | Phase::Frozen { target, .. } => Some(target),
        }
    }

    /// The newest pending revision: the queued one of a freeze, else the target.
    pub fn newest(&self) -> Option<&Candidate> {
        match self {
            Phase::Frozen {
                queued: Some(q), ..
            } => Some(q.as_ref()),
            other => other.target(),
        }
    }

    /// Replace the newest pending revision's policy in place (a change that applies at
    /// once, or a tightening, keeps the phase and its clock).
    pub fn newest_mut(&mut self) -> Option<&mut Candidate> {
        match self {
            Phase::Idle => None,
            Phase::Frozen {
                queued: Some(q), ..
            } => Some(q.as_mut()),
            Phase::Baking { target, .. }
            | Phase::Held { target, .. }
            | Phase::Frozen { target, .. } => Some(target),
        }
    }

    /// Whether the canaries serve the target now.
    pub fn canaries_on_target(&self) -> bool {
        matches!(self, Phase::Baking { .. } | Phase::Held { .. })
    }

    fn bake(target: Candidate, now: Instant, timing: Timing) -> Phase {
        Phase::Baking {
            target,
            started: now,
            deadline: now + timing.bake,
            limit: now + timing.max_bake.max(timing.bake),
        }
    }

    /// A new revision of policy.
    pub fn propose(&mut self, now: Instant, candidate: Candidate, timing: Timing) -> Transition {
        match std::mem::take(self) {
            Phase::Idle => {
                *self = Phase::bake(candidate, now, timing);
                Transition::Started
            }
            Phase::Baking { .. } | Phase::Held { .. } => {
                *self = Phase::bake(candidate, now, timing);
                Transition::Superseded
            }
            Phase::Frozen {
                target,
                since,
                reason,
                ..
            } => {
                *self = Phase::Frozen {
                    target,
                    since,
                    reason,
                    queued: Some(Box::new(candidate)),
                };
                Transition::Queued
            }
        }
    }

    /// The gates' verdict at `now`. Returns the promoted candidate with
    /// [`Transition::Promoted`].
    pub fn judge(
        &mut self,
        now: Instant,
        judgement: Judgement,
        reason: impl FnOnce() -> String,
        timing: Timing,
    ) -> Option<(Transition, Option<Candidate>)> {
        match (std::mem::take(self), judgement) {
            (Phase::Baking { target, .. } | Phase::Held { target, .. }, Judgement::Fail) => {
                *self = Phase::Frozen {
                    target,
                    since: now,
                    reason: reason(),
                    queued: None,
                };
                Some((Transition::Frozen, None))
            }
            (
                Phase::Baking {
                    target, deadline, ..
                },
                Judgement::Pass,
            ) if now >= deadline => Some((Transition::Promoted, Some(target))),
            (
                Phase::Baking {
                    target,
                    started,
                    deadline,
                    limit,
                },
                Judgement::Inconclusive,
            ) if now >= deadline => {
                let next = deadline + timing.bake;
                if next <= limit {
                    *self = Phase::Baking {
                        target,
                        started,
                        deadline: next,
                        limit,
                    };
                    Some((Transition::Extended, None))
                } else {
                    *self = Phase::Held {
                        target,
                        since: now,
                        reason: reason(),
                    };
                    Some((Transition::Held, None))
                }
            }
            (phase, _) => {
                *self = phase;
                None
            }
        }
    }

    /// A revision that cannot roll out (no canary to try it on): frozen at once, or
    /// queued behind a freeze like any other.
    pub fn refuse(
        &mut self,
        now: Instant,
        candidate: Candidate,
        reason: String,
        timing: Timing,
    ) -> Transition {
        if matches!(self, Phase::Frozen { .. }) {
            return self.propose(now, candidate, timing);
        }
        *self = Phase::Frozen {
            target: candidate,
            since: now,
            reason,
            queued: None,
        };
        Transition::Frozen
    }

    /// The revision being baked, to re-select its canaries.
    pub fn baking_mut(&mut self) -> Option<&mut Candidate> {
        match self {
            Phase::Baking { target, .. } => Some(target),
            _ => None,
        }
    }

    /// Freeze without judging (a revision that cannot be staged).
    pub fn freeze(&mut self, now: Instant, reason: String) -> Transition {
        if let Some(target) = std::mem::take(self).newest().cloned() {
            *self = Phase::Frozen {
                target,
                since: now,
                reason,
                queued: None,
            };
        }
        Transition::Frozen
    }

    /// Operator: go on. A frozen rollout bakes again (the queued revision if one
    /// arrived, since it is the newest); a held one is promoted.
    pub fn resume(
        &mut self,
        now: Instant,
        timing: Timing,
    ) -> Result<(Transition, Option<Candidate>), NotApplicable> {
        match std::mem::take(self) {
            Phase::Frozen { target, queued, .. } => {
                *self = Phase::bake(queued.map_or(target, |q| *q), now, timing);
                Ok((Transition::Resumed, None))
            }
            Phase::Held { target, .. } => Ok((Transition::Promoted, Some(target))),
            phase => {
                let error = NotApplicable {
                    action: "resume",
                    phase: phase.label(),
                };
                *self = phase;
                Err(error)
            }
        }
    }

    /// Operator: withdraw the revision. Every route keeps the stable one; a revision
    /// queued behind a freeze starts its own rollout. Returns the withdrawn candidate.
    pub fn abort(
        &mut self,
        now: Instant,
        timing: Timing,
    ) -> Result<(Transition, Candidate), NotApplicable> {
        match std::mem::take(self) {
            Phase::Frozen {
                target,
                queued: Some(queued),
                ..
            } => {
                *self = Phase::bake(*queued, now, timing);
                Ok((Transition::Aborted, target))
            }
            Phase::Baking { target, .. }
            | Phase::Held { target, .. }
            | Phase::Frozen { target, .. } => Ok((Transition::Aborted, target)),
            Phase::Idle => Err(NotApplicable {
                action: "abort",
                phase: "idle",
            }),
        }
    }

    /// Operator: promote the newest pending revision to every route now, skipping the
    /// rest of the bake and the gates.
    pub fn promote(&mut self) -> Result<(Transition, Candidate), NotApplicable> {
        match std::mem::take(self).newest().cloned() {
            Some(candidate) => Ok((Transition::Promoted, candidate)),
            None => Err(NotApplicable {
                action: "promote",
                phase: "idle",
            }),
        }
    }
}
