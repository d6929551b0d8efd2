//! One rollout decision for every replica (Kubernetes mode).
//!
//! One replica leads (it holds the Lease). Its controller decides as in file mode,
//! and [`Rollout::record`] turns the decision into the `ApiGateRollout` status. Every
//! other replica follows: [`Rollout::follow`] rebuilds from the record and its own view
//! of the routes what each route serves, and serves it. A follower still applies
//! unchanged policy and tightening-only changes at once on its own, as the leader
//! does, so a revocation never waits for the record; it never starts, promotes or
//! freezes a rollout itself. A new leader continues from the record
//! ([`Rollout::lead`]): same target, same canaries, same deadline.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use apigate_control::compile::compile_cached;
use apigate_control::inputs::Inputs;
use apigate_control::rollout::Desired;
use apigate_control::source::kubernetes::rollout_record::{self, RolloutAction, RolloutRecord};
use apigate_control::RouteId;
use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

use super::phase::{Candidate, NotApplicable, Phase, Transition};
use super::{ActError, Action, Inner, Rollout};
use crate::install::Origin;
use crate::state::State;

/// Where the `ApiGateRollout` object is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordName {
    /// Namespace (apigate's own).
    pub namespace: String,
    /// Name (the gateway's).
    pub name: String,
}

/// Who decides the rollout.
#[derive(Debug, Clone)]
pub enum Authority {
    /// This process alone (file mode): the state is shown at the admin endpoint.
    Local,
    /// This replica holds the Lease: it decides and writes the record.
    Leader {
        /// The record.
        record: RecordName,
    },
    /// Another replica decides; this one serves what the record says.
    Follower {
        /// The record.
        record: RecordName,
        /// Why this replica cannot serve what the record says yet.
        behind: Option<String>,
    },
}

impl Authority {
    /// Whether this controller's gates and clock decide.
    pub fn decides(&self) -> bool {
        !matches!(self, Authority::Follower { .. })
    }

    /// For `/rollout`.
    pub fn label(&self) -> &'static str {
        match self {
            Authority::Local => "local",
            Authority::Leader { .. } => "leader",
            Authority::Follower { .. } => "follower",
        }
    }

    /// A follower's reason for not serving the record yet.
    pub fn behind(&self) -> Option<String> {
        match self {
            Authority::Follower { behind, .. } => behind.clone(),
            _ => None,
        }
    }

    /// Actions from the admin endpoint are refused where the record decides.
    pub fn refuses_admin_actions(&self) -> Option<ActError> {
        match self {
            Authority::Local => None,
            Authority::Leader { record } | Authority::Follower { record, .. } => {
                Some(ActError::Shared {
                    record: format!("{}/{}", record.namespace, record.name),
                    namespace: record.namespace.clone(),
                    name: record.name.clone(),
                })
            }
        }
    }
}

/// A transition the leader announces as a Kubernetes Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// Event reason, e.g. `Frozen`.
    pub reason: &'static str,
    /// A Warning rather than a Normal Event.
    pub warning: bool,
    /// What happened.
    pub note: String,
}

/// Events kept for publishing at most.
const MAX_ANNOUNCEMENTS: usize = 64;

/// Queue an Event for `transition` if this replica leads.
pub(super) fn announce(inner: &mut Inner, transition: &Transition) {
    if !matches!(inner.authority, Authority::Leader { .. }) {
        return;
    }
    let (reason, warning) = match transition {
        Transition::Started => ("RolloutStarted", false),
        Transition::Superseded => ("RolloutSuperseded", false),
        Transition::Promoted => ("Promoted", false),
        Transition::Frozen => ("Frozen", true),
        Transition::Held => ("Held", true),
        Transition::Resumed => ("Resumed", false),
        Transition::Aborted => ("Aborted", false),
        Transition::Extended | Transition::Queued => return,
    };
    let detail = match &inner.phase {
        Phase::Frozen { reason, .. } | Phase::Held { reason, .. } => reason.clone(),
        Phase::Baking { target, .. } => format!(
            "revision {} on canaries {}",
            target.desired.revision(),
            names(&target.canaries).join(", ")
        ),
        Phase::Idle => String::new(),
    };
    // Bounded: while Events cannot be published the oldest go first.
    if inner.events.len() >= MAX_ANNOUNCEMENTS {
        inner.events.remove(0);
    }
    inner.events.push(Announcement {
        reason,
        warning,
        note: format!("rollout {}: {detail}", transition.label()),
    });
}

fn names(routes: &BTreeSet<RouteId>) -> Vec<String> {
    routes.iter().map(ToString::to_string).collect()
}

fn phase_name(phase: &Phase) -> &'static str {
    match phase {
        Phase::Idle => "Idle",
        Phase::Baking { .. } => "Baking",
        Phase::Held { .. } => "Held",
        Phase::Frozen { .. } => "Frozen",
    }
}

fn rfc3339(at: SystemTime) -> Option<String> {
    Timestamp::try_from(at).ok().map(|t| t.to_string())
}

/// Wall-clock time for records. It is the system's, except while tokio's clock is
/// paused (tests), when it moves with the paused clock from the wall time first seen,
/// so that deadlines compared across the record stay consistent with the phases.
pub(super) fn wall_now() -> SystemTime {
    static BASE: std::sync::OnceLock<(Instant, SystemTime)> = std::sync::OnceLock::new();
    let (at, wall) = *BASE.get_or_init(|| (Instant::now(), SystemTime::now()));
    let tokio_now = Instant::now();
    let std_now = std::time::Instant::now();
    let paused = tokio_now
        .into_std()
        .checked_duration_since(std_now)
        .or_else(|| std_now.checked_duration_since(tokio_now.into_std()))
        .is_some_and(|skew| skew > std::time::Duration::from_millis(100));
    if paused {
        to_wall(tokio_now, at, wall)
    } else {
        SystemTime::now()
    }
}

/// `at` (on the tokio clock) as wall-clock time, given one moment known on both.
fn to_wall(at: Instant, known: Instant, known_wall: SystemTime) -> SystemTime {
    let moved = if at >= known {
        known_wall.checked_add(at - known)
    } else {
        known_wall.checked_sub(known - at)
    };
    moved.unwrap_or(known_wall)
}

/// A recorded wall-clock time on the tokio clock, or `None` when unreadable or out of
/// the clock's range (a record is input from the cluster).
fn from_wall(text: Option<&str>, now: Instant) -> Option<Instant> {
    let at = SystemTime::from(text?.parse::<Timestamp>().ok()?);
    let wall = wall_now();
    match at.duration_since(wall) {
        Ok(ahead) => now.checked_add(ahead),
        Err(behind) => now.checked_sub(behind.duration()),
    }
}

impl Rollout {
    /// A controller for Kubernetes mode, whose routes come later from the source (its
    /// first full configuration applies at once). With a `record` it decides together
    /// with the other replicas through it, following until [`Rollout::lead`];
    /// without, alone (a single replica with no namespace to keep a record in).
    pub fn for_kubernetes(
        state: Arc<State>,
        base: Inputs,
        record: Option<RecordName>,
    ) -> Arc<Rollout> {
        let authority = match record {
            Some(record) => Authority::Follower {
                record,
                behind: None,
            },
            None => Authority::Local,
        };
        Self::with_authority(state, base, authority, Origin::Kubernetes)
    }

    /// Ticks whenever the state changes.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether rollouts are on in the active configuration.
    pub fn enabled(&self) -> bool {
        self.lock().settings.enabled
    }

    /// Whether the source's first full configuration has arrived.
    pub fn synced(&self) -> bool {
        self.lock().synced
    }

    /// The decision as the record holds it (the leader writes this). Built again only
    /// after the state changed: it is a pass over every route.
    pub fn record(&self, leader: &str) -> RolloutRecord {
        let mut inner = self.lock();
        let version = *self.changes.borrow();
        if let Some((built, record)) = &inner.record {
            if *built == version && record.leader == leader {
                return record.clone();
            }
        }
        let record = build_record(&inner, leader);
        inner.record = Some((version, record.clone()));
        record
    }
    /// Serve what `record` says, if this replica's view of the routes can rebuild its
    /// stable revision; otherwise keep serving what it does and say why in the status.
    /// Returns whether it serves the record's stable revision (so may be ready).
    pub fn follow(&self, record: &RolloutRecord) -> bool {
        let mut inner = self.lock();
        // Before the first full sync there are no routes to rebuild anything from.
        if inner.authority.decides() || !inner.synced {
            return false;
        }
        let now = Instant::now();
        let outcome = adopt(&mut inner, record, now);
        let behind = match &outcome {
            Ok((_, note)) => note.clone(),
            Err(why) => Some(why.clone()),
        };
        if let Authority::Follower {
            behind: current, ..
        } = &mut inner.authority
        {
            if *current != behind {
                match &behind {
                    Some(why) => {
                        tracing::warn!(reason = %why, "cannot serve the rollout record yet")
                    }
                    None => tracing::info!("serving the rollout record"),
                }
                *current = behind;
            }
        }
        match outcome {
            // A staging that does not compile (a stable revision's Secret this replica
            // no longer holds) is rejected: the record is not served then.
            Ok((true, _)) => self.restage(&mut inner, Origin::Kubernetes, now),
            Ok((false, _)) => {
                // Nothing served changed: no notification (it would wake the reader).
                self.export_metrics(&inner);
                inner.installed
            }
            Err(_) => {
                self.export_metrics(&inner);
                false
            }
        }
    }

    /// This replica now holds the Lease: continue from `record` (the previous leader's
    /// decision), then decide on any revision newer than it. Refused (`false`) before
    /// the first full sync: there is nothing yet to decide with.
    pub fn lead(&self, record: Option<&RolloutRecord>, name: RecordName) -> bool {
        let mut inner = self.lock();
        if !inner.synced {
            return false;
        }
        let now = Instant::now();
        if let Some(record) = record {
            if let Err(why) = adopt(&mut inner, record, now) {
                // Best effort: the routes the record names keep their stable policy;
                // whatever else differs from it rolls out anew below (canaries first).
                tracing::warn!(reason = %why, "the rollout record cannot be rebuilt exactly here; the routes it names keep their stable policy and the rest rolls out anew");
                if let Ok(overrides) = rollout_record::overrides(record) {
                    let newest = Desired::of(&inner.live);
                    inner.stable = Desired::with_overrides(&newest, &overrides);
                    inner.revisions += 1;
                    inner.stable_revision = inner.revisions;
                    inner.phase = Phase::Idle;
                }
            }
        }
        inner.pending = None;
        inner.authority = Authority::Leader { record: name };
        tracing::info!(
            phase = inner.phase.label(),
            "leading the rollout; continuing from the record"
        );
        if inner.phase.canaries_on_target() {
            // The gates judge this replica's traffic from here on.
            self.begin_bake(&mut inner, now);
        }
        let newest = Desired::of(&inner.live);
        // An operator withdrew the newest revision: it stays withdrawn.
        let withdrawn = record.and_then(|r| r.aborted_revision.as_ref());
        if withdrawn == Some(&newest.revision()) {
            inner.revisions += 1;
            inner.aborted = Some((inner.revisions, newest.clone()));
        }
        let latest = inner.phase.newest().map_or(&inner.stable, |c| &c.desired);
        let still_aborted = inner
            .aborted
            .as_ref()
            .is_some_and(|(_, a)| newest.diff(a).is_empty());
        if !newest.diff(latest).is_empty() && !still_aborted && inner.settings.enabled {
            let live = inner.live.clone();
            match compile_cached(&live, &mut inner.cache) {
                Ok(snapshot) => self.classify(&mut inner, newest, &snapshot, now),
                Err(errors) => {
                    tracing::warn!(errors = errors.len(), "newest routes do not compile");
                }
            }
        }
        self.restage(&mut inner, Origin::Kubernetes, now);
        true
    }

    /// This replica lost the Lease: follow the record from now on.
    pub fn step_down(&self, name: RecordName) {
        let mut inner = self.lock();
        inner.authority = Authority::Follower {
            record: name,
            behind: None,
        };
        inner.events.clear();
        inner.start = None;
        self.export(&inner);
    }

    /// The Events the leader has yet to publish.
    pub fn take_announcements(&self) -> Vec<Announcement> {
        std::mem::take(&mut self.lock().events)
    }

    /// An operator's action taken from the record's `spec.action` (the leader only).
    pub fn act_from_record(&self, action: RolloutAction) -> Result<(), NotApplicable> {
        let action = match action {
            RolloutAction::Resume => Action::Resume,
            RolloutAction::Abort => Action::Abort,
            RolloutAction::Promote => Action::Promote,
        };
        self.act_now(action).map(drop)
    }
}

/// Make `inner` what `record` says: `Ok((changed, note))` with whether what routes
/// serve changed, and why it serves less than the record says (a target revision not
/// seen here yet: every route serves the stable one meanwhile). `Err` when this
/// replica's routes cannot rebuild the stable revision; nothing is changed then.
fn adopt(
    inner: &mut Inner,
    record: &RolloutRecord,
    now: Instant,
) -> Result<(bool, Option<String>), String> {
    let newest = Desired::of(&inner.live);
    let overrides = rollout_record::overrides(record).map_err(|e| e.to_string())?;
    let old_stable = inner.stable.revision();
    let stable = if old_stable == record.stable_revision {
        None
    } else {
        let rebuilt = Desired::with_overrides(&newest, &overrides);
        let id = rebuilt.revision();
        if id != record.stable_revision {
            return Err(format!(
                "the routes seen here rebuild revision {id}, not the recorded stable revision {}; waiting for them to catch up",
                record.stable_revision
            ));
        }
        Some(rebuilt)
    };
    let mut note = None;
    let target = match &record.target_revision {
        None => None,
        Some(id) => {
            let known = [
                Some(&newest),
                inner.phase.target().map(|c| &c.desired),
                inner.phase.newest().map(|c| &c.desired),
            ]
            .into_iter()
            .flatten()
            .find(|d| d.revision() == *id)
            .cloned();
            if known.is_none() {
                note = Some(format!(
                    "target revision {id} not seen here yet; every route serves the stable revision"
                ));
            }
            known
        }
    };
    let canaries: BTreeSet<RouteId> = record
        .canaries
        .iter()
        .filter_map(|c| c.split_once('/'))
        .map(|(namespace, name)| RouteId {
            namespace: namespace.into(),
            name: name.into(),
        })
        .collect();
    let before = (
        old_stable,
        inner.phase.label(),
        inner.phase.target().map(|c| c.desired.revision()),
        inner.phase.target().map(|c| c.canaries.clone()),
    );
    // The phase's start on both clocks, consistently: the record's when readable.
    let recorded_since = from_wall(record.since.as_deref(), now).zip(
        record
            .since
            .as_deref()
            .and_then(|s| s.parse::<Timestamp>().ok()),
    );
    let (since, since_wall) = match recorded_since {
        Some((at, wall)) => (at, SystemTime::from(wall)),
        None => (now, wall_now()),
    };
    let bake = inner.settings.bake;
    let max_bake = inner.settings.max_bake.max(bake);
    let reason = record.reason.clone().unwrap_or_default();
    let current_target = inner.phase.target().cloned();
    let mut candidate = |desired: Desired| {
        let revision = match &current_target {
            Some(c) if c.desired == desired => c.revision,
            _ => {
                inner.revisions += 1;
                inner.revisions
            }
        };
        Candidate {
            revision,
            desired,
            canaries: canaries.clone(),
        }
    };
    let phase = match (record.phase.as_str(), target) {
        // Idle, or a target not seen here: the stable revision everywhere.
        ("Idle", _) | (_, None) => Phase::Idle,
        ("Baking", Some(target)) => {
            // An unreadable deadline bakes afresh rather than promote at once; none
            // is later than this replica's own settings allow (a record is input).
            let latest = now.checked_add(max_bake).unwrap_or(now);
            let deadline = from_wall(record.deadline.as_deref(), now)
                .or_else(|| now.checked_add(bake))
                .unwrap_or(now)
                .min(latest);
            let limit = from_wall(record.limit.as_deref(), now)
                .unwrap_or(deadline)
                .clamp(deadline, latest.max(deadline));
            Phase::Baking {
                target: candidate(target),
                started: since,
                deadline,
                limit,
            }
        }
        ("Held", Some(target)) => Phase::Held {
            target: candidate(target),
            since,
            reason,
        },
        ("Frozen", Some(target)) => Phase::Frozen {
            target: candidate(target),
            since,
            reason,
            queued: None,
        },
        (phase, _) => return Err(format!("unknown record phase {phase:?}")),
    };
    if let Some(stable) = stable {
        let was_target = inner
            .phase
            .target()
            .filter(|c| c.desired == stable)
            .map(|c| c.revision);
        inner.stable_revision = match was_target {
            Some(revision) => revision,
            None => {
                inner.revisions += 1;
                inner.revisions
            }
        };
        inner.stable = stable;
    }
    inner.phase = phase;
    // The newest routes are recorded now (as stable or target): nothing pending.
    let newest_id = newest.revision();
    if newest_id == record.stable_revision || record.target_revision.as_ref() == Some(&newest_id) {
        inner.pending = None;
    }
    let after = (
        inner.stable.revision(),
        inner.phase.label(),
        inner.phase.target().map(|c| c.desired.revision()),
        inner.phase.target().map(|c| c.canaries.clone()),
    );
    let changed = before != after;
    if changed {
        inner.phase_since = since;
        inner.phase_wall = since_wall;
        inner.start = None;
        tracing::info!(
            phase = inner.phase.label(),
            stable = %record.stable_revision,
            target = ?record.target_revision,
            leader = %record.leader,
            "rollout transition from the record"
        );
    }
    Ok((changed, note))
}

/// The record of `inner`'s decision.
fn build_record(inner: &Inner, leader: &str) -> RolloutRecord {
    let wall = |at: Instant| rfc3339(to_wall(at, inner.phase_since, inner.phase_wall));
    let (deadline, limit) = match &inner.phase {
        Phase::Baking {
            deadline, limit, ..
        } => (wall(*deadline), wall(*limit)),
        _ => (None, None),
    };
    let newest = Desired::of(&inner.live);
    let target = inner.phase.target();
    RolloutRecord {
        phase: phase_name(&inner.phase).into(),
        leader: leader.into(),
        stable_revision: inner.stable.revision(),
        target_revision: target.map(|c| c.desired.revision()),
        canaries: target.map(|c| names(&c.canaries)).unwrap_or_default(),
        reason: match &inner.phase {
            Phase::Frozen { reason, .. } | Phase::Held { reason, .. } => Some(reason.clone()),
            _ => None,
        },
        since: rfc3339(inner.phase_wall),
        deadline,
        limit,
        stable_routes: rollout_record::stable_routes(&inner.stable.overrides(&newest)),
        aborted_revision: inner.aborted.as_ref().map(|(_, d)| d.revision()),
        last_action: None,
    }
}
