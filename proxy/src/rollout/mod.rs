//! Canary rollouts of configuration: both sources' one path from a new revision to the
//! active state (in Kubernetes mode shared between the replicas, [`shared`]).
//!
//! Every revision the source produces is compiled whole first (a bad one is rejected
//! and changes nothing). Then, with rollouts on, its *policy* is compared with the
//! newest one seen ([`apigate_control::rollout`]):
//! - unchanged policy (only replicas, certificate or Secret contents, or labels
//!   changed): applied at once to whatever each route serves;
//! - tightening-only: applied at once everywhere, into the revision a rollout in
//!   progress has not replaced as well, so a revocation never waits;
//! - anything else: the canary routes get it first ([`phase`]), the [`gates`] judge
//!   their traffic ([`signals`]) against the same routes before, and it is promoted
//!   to every route, or frozen with the canaries back on the stable revision.
//!
//! With rollouts off (the default) every revision is installed at once, as before.
//! Everything installed goes through the one installer ([`crate::install`]).

pub mod gates;
pub mod phase;
pub mod shared;
pub mod signals;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use apigate_control::compile::{compile_cached, RouteCache};
use apigate_control::inputs::{Files, Inputs};
use apigate_control::rollout::{canaries, merge, selection_problem, Desired, RolloutSettings};
use apigate_control::{ConfigError, RouteId, Snapshot};
use serde::Serialize;
use tokio::time::Instant;

use self::gates::{Counters, Health, Outcome, Reading, Verdict};
use self::phase::{Candidate, Judgement, NotApplicable, Phase, Timing, Transition};
use crate::install::{self, Origin};
use crate::state::State;

/// An operator's decision about the rollout in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Go on: a frozen rollout bakes again, a held one is promoted.
    Resume,
    /// Withdraw the pending revision; every route keeps the stable one.
    Abort,
    /// Promote the pending revision to every route now.
    Promote,
}

impl Action {
    /// Parse the admin path segment.
    pub fn parse(name: &str) -> Option<Action> {
        match name {
            "resume" => Some(Action::Resume),
            "abort" => Some(Action::Abort),
            "promote" => Some(Action::Promote),
            _ => None,
        }
    }
}

/// Why an operator's action was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActError {
    /// It does not apply in the current phase.
    #[error(transparent)]
    NotApplicable(#[from] NotApplicable),
    /// In Kubernetes mode the shared record decides; actions go through it.
    #[error("in Kubernetes mode, act through the ApiGateRollout object {record}: kubectl -n {namespace} patch apigaterollout {name} --type merge -p '{{\"spec\":{{\"action\":\"Resume|Abort|Promote\"}}}}'")]
    Shared {
        /// `namespace/name` of the record.
        record: String,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// The rollout as `/rollout` and `apigate rollout status` show it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Rollouts on.
    pub enabled: bool,
    /// `local` (file mode: this process decides), `leader` (Kubernetes mode, deciding
    /// and recording) or `follower` (applying the record).
    pub authority: &'static str,
    /// Content id of the stable revision's routes (the same on every replica).
    pub stable_id: String,
    /// Content id of the target's routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_id: Option<String>,
    /// A follower that cannot serve what the record says yet, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub behind: Option<String>,
    /// `idle`, `baking`, `held` or `frozen`.
    pub phase: &'static str,
    /// The policy revision every non-canary route serves.
    pub stable_revision: u64,
    /// The revision being rolled out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_revision: Option<u64>,
    /// Its canary routes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub canaries: Vec<String>,
    /// A revision waiting behind a freeze.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued_revision: Option<u64>,
    /// Seconds in the current phase.
    pub seconds_in_phase: f64,
    /// Seconds until the gates may promote (baking).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds_to_deadline: Option<f64>,
    /// Why it is frozen or held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A revision an operator aborted, which the source still holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aborted_revision: Option<u64>,
    /// The last gate readings of this rollout.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<Reading>,
}

/// The rollout controller.
pub struct Rollout {
    state: Arc<State>,
    inner: Mutex<Inner>,
    /// Counts state changes, for whoever shares the state (the record writer).
    changes: tokio::sync::watch::Sender<u64>,
}

struct Inner {
    /// The source's newest inputs: what applies at once is read from them.
    live: Inputs,
    /// File contents of earlier inputs, for files only an older revision references
    /// (the newest inputs' own are read from `live`).
    fallback: Files,
    stable: Desired,
    stable_revision: u64,
    revisions: u64,
    phase: Phase,
    phase_since: Instant,
    /// An aborted revision the source still holds: resubmitting it changes nothing.
    aborted: Option<(u64, Desired)>,
    settings: RolloutSettings,
    /// One cache for both revisions' compiles: a route the same in both compiles once.
    cache: RouteCache,
    /// Cumulative counters of `history_routes`, sampled each tick over a bake time.
    history: VecDeque<(Instant, Counters)>,
    history_routes: BTreeSet<RouteId>,
    /// Where the current bake started from.
    start: Option<Start>,
    verdict: Option<Verdict>,
    /// Who decides: this process alone, or the shared record.
    authority: shared::Authority,
    /// Wall-clock time of the last transition, for the shared record.
    phase_wall: std::time::SystemTime,
    /// Transitions the leader has yet to announce as Events.
    events: Vec<shared::Announcement>,
    /// The last record built, and the state version it was built at.
    record: Option<(
        u64,
        apigate_control::source::kubernetes::rollout_record::RolloutRecord,
    )>,
    /// A follower's newest routes that the record does not name yet.
    pending: Option<Desired>,
    /// Whether the last configuration staged was installed (not rejected).
    installed: bool,
    /// Whether the source's first full configuration arrived (it applies at once: it
    /// is where the process starts, not a change).
    synced: bool,
    /// The source, for metrics and logs.
    origin: Origin,
}

/// The canaries' counters when a bake started and their baseline before it.
struct Start {
    counters: Counters,
    baseline: Option<Counters>,
    health: Health,
}

/// How often the gates are read: a twentieth of the bake, between 100 ms and 1 s.
fn period(settings: &RolloutSettings) -> Duration {
    (settings.bake / 20).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

impl Rollout {
    /// A controller for `state`, whose active configuration was compiled from `inputs`,
    /// deciding alone (file mode).
    pub fn new(state: Arc<State>, inputs: Inputs) -> Arc<Rollout> {
        Self::with_authority(state, inputs, shared::Authority::Local, Origin::File)
    }

    fn with_authority(
        state: Arc<State>,
        inputs: Inputs,
        authority: shared::Authority,
        origin: Origin,
    ) -> Arc<Rollout> {
        let settings = state.load().snapshot.gateway.rollout.clone();
        let inner = Inner {
            stable: Desired::of(&inputs),
            fallback: Files::new(),
            live: inputs,
            stable_revision: 1,
            revisions: 1,
            phase: Phase::Idle,
            phase_since: Instant::now(),
            aborted: None,
            settings,
            cache: RouteCache::default(),
            history: VecDeque::new(),
            history_routes: BTreeSet::new(),
            start: None,
            verdict: None,
            authority,
            phase_wall: shared::wall_now(),
            events: Vec::new(),
            record: None,
            pending: None,
            installed: true,
            // A file's first inputs are its whole configuration; Kubernetes routes
            // come later.
            synced: origin == Origin::File,
            origin,
        };
        let rollout = Arc::new(Rollout {
            state,
            inner: Mutex::new(inner),
            changes: tokio::sync::watch::channel(0).0,
        });
        rollout.export(&rollout.lock());
        rollout
    }

    /// The state it installs into.
    pub fn state(&self) -> &State {
        &self.state
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every step assigns
        // whole values); keep serving rather than poison every later reload.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new revision from the source: reject it, apply it at once, or roll it out.
    /// Blocking (compiles).
    pub fn submit(&self, live: Inputs, origin: Origin) -> Result<(), Vec<ConfigError>> {
        let mut inner = self.lock();
        let newest = match compile_cached(&live, &mut inner.cache) {
            Ok(snapshot) => snapshot,
            Err(errors) => {
                install::reject(&self.state, &errors, origin);
                return Err(errors);
            }
        };
        self.accept(&mut inner, live, newest, origin);
        Ok(())
    }

    /// [`Rollout::submit`] of a revision the source compiled already (`newest` from
    /// `live`). Blocking (compiles the staged revisions of a rollout).
    pub fn submit_compiled(&self, live: Inputs, newest: Snapshot, origin: Origin) {
        let mut inner = self.lock();
        self.accept(&mut inner, live, newest, origin);
    }

    fn accept(&self, inner: &mut Inner, live: Inputs, newest: Snapshot, origin: Origin) {
        let settings = newest.gateway.rollout.clone();
        let desired = Desired::of(&live);
        if !settings.enabled || !inner.synced {
            inner.synced = true;
            if !matches!(inner.phase, Phase::Idle) {
                tracing::warn!(
                    phase = inner.phase.label(),
                    "rollouts turned off; the newest revision applies to every route"
                );
            }
            inner.revisions += 1;
            inner.stable_revision = inner.revisions;
            inner.stable = desired;
            inner.phase = Phase::Idle;
            inner.aborted = None;
            inner.start = None;
            inner.verdict = None;
            // No older revision to stage: nothing to fall back to. With rollouts off
            // nothing is staged at all, so the inputs (a cluster's Secret bytes) are not
            // kept either.
            inner.fallback = Files::new();
            inner.live = if settings.enabled {
                live
            } else {
                Inputs::default()
            };
            inner.settings = settings;
            install::install(&self.state, newest, origin);
            inner.installed = true;
            self.export(inner);
            return;
        }
        // The previous inputs' files become the fallback (moved, not copied).
        let previous = std::mem::replace(&mut inner.live, live);
        inner.fallback.extend(previous.files);
        inner.settings = settings;
        let now = Instant::now();
        let still_aborted = inner
            .aborted
            .as_ref()
            .is_some_and(|(_, a)| desired.diff(a).is_empty());
        if !still_aborted {
            inner.aborted = None;
            self.classify(inner, desired, &newest, now);
        }
        self.restage(inner, origin, now);
    }

    /// Apply a revision that compiled: at once, as a tightening, or as a rollout.
    fn classify(&self, inner: &mut Inner, desired: Desired, newest: &Snapshot, now: Instant) {
        // A follower compares with the newest routes it saw, which may be ahead of the
        // record (a revision the leader has yet to record, or queues behind a freeze).
        let latest = inner
            .pending
            .as_ref()
            .or(inner.phase.newest().map(|c| &c.desired))
            .unwrap_or(&inner.stable)
            .clone();
        let diff = desired.diff(&latest);
        if diff.is_empty() {
            match (inner.pending.as_mut(), inner.phase.newest_mut()) {
                (Some(pending), _) => *pending = desired,
                (None, Some(candidate)) => candidate.desired = desired,
                (None, None) => inner.stable = desired,
            }
            return;
        }
        let staged = latest.stage(&inner.live, &inner.fallback);
        let tightens = apigate_control::compile(&staged)
            .is_ok_and(|before| diff.tightens_only(&before, newest));
        if tightens {
            let transplanted = if inner.pending.is_none() && inner.phase.newest().is_none() {
                Some(desired.clone())
            } else {
                inner.stable.transplant(&latest, &desired, &diff)
            };
            if let Some(stable) = transplanted {
                inner.revisions += 1;
                let revision = inner.revisions;
                match (inner.pending.as_mut(), inner.phase.newest_mut()) {
                    (Some(pending), _) => *pending = desired,
                    (None, Some(candidate)) => {
                        candidate.desired = desired;
                        candidate.revision = revision;
                    }
                    (None, None) => inner.stable_revision = revision,
                }
                inner.stable = stable;
                tracing::info!(
                    revision,
                    removed_routes = diff.removed.len(),
                    changed_routes = diff.changed.len(),
                    "tightening-only change: applied to every route at once"
                );
                self.count("tightened");
                return;
            }
        }
        if !inner.authority.decides() {
            // A follower serves a new revision where the record says, once it does.
            tracing::debug!(
                changed = diff.changed.len(),
                "new configuration revision; waiting for the rollout record"
            );
            inner.pending = Some(desired);
            return;
        }
        inner.revisions += 1;
        let candidate = Candidate {
            revision: inner.revisions,
            canaries: canaries(&inner.settings.canary, desired.routes()),
            desired,
        };
        let fields: Vec<String> = diff
            .changed
            .iter()
            .flat_map(|c| {
                c.fields
                    .iter()
                    .map(move |f| format!("{}:{}", c.id, f.as_str()))
            })
            .take(20)
            .collect();
        tracing::info!(
            revision = candidate.revision,
            canaries = candidate.canaries.len(),
            added = diff.added.len(),
            removed = diff.removed.len(),
            changed = ?fields,
            gateway = ?diff.gateway.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
            "new configuration revision to roll out"
        );
        if let Some(reason) = cannot_canary(&inner.settings, &candidate) {
            let transition = inner
                .phase
                .refuse(now, candidate, reason, timing(&inner.settings));
            self.transitioned(inner, &transition, now);
            return;
        }
        let transition = inner.phase.propose(now, candidate, timing(&inner.settings));
        self.transitioned(inner, &transition, now);
    }

    /// Compile what each route should serve now and install it.
    /// Returns whether what each route should serve was installed (a revision that
    /// does not compile is rejected and the active configuration stays).
    fn restage(&self, inner: &mut Inner, origin: Origin, now: Instant) -> bool {
        let installed = match self.staged(inner) {
            Ok(snapshot) => {
                install::install(&self.state, snapshot, origin);
                true
            }
            Err(Staging::Invalid(errors)) => {
                install::reject(&self.state, &errors, origin);
                false
            }
            Err(Staging::Split(errors)) => {
                let reason = errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                let transition = inner.phase.freeze(now, format!("cannot stage: {reason}"));
                self.transitioned(inner, &transition, now);
                match self.staged(inner) {
                    Ok(snapshot) => {
                        install::install(&self.state, snapshot, origin);
                        true
                    }
                    Err(Staging::Invalid(errors) | Staging::Split(errors)) => {
                        install::reject(&self.state, &errors, origin);
                        false
                    }
                }
            }
        };
        inner.installed = installed;
        self.export(inner);
        installed
    }

    fn staged(&self, inner: &mut Inner) -> Result<Snapshot, Staging> {
        let inputs = inner.stable.stage(&inner.live, &inner.fallback);
        let stable = compile_cached(&inputs, &mut inner.cache).map_err(Staging::Invalid)?;
        let Some(target) = inner
            .phase
            .target()
            .filter(|_| inner.phase.canaries_on_target())
        else {
            return Ok(stable);
        };
        let inputs = target.desired.stage(&inner.live, &inner.fallback);
        let target_snapshot =
            compile_cached(&inputs, &mut inner.cache).map_err(Staging::Invalid)?;
        merge(&stable, &target_snapshot, &target.canaries).map_err(Staging::Split)
    }

    /// Read the gates and move the rollout on. Called every [`Rollout::period`].
    pub fn tick(&self, now: Instant) {
        let mut inner = self.lock();
        if !inner.settings.enabled {
            return;
        }
        self.sample(&mut inner, now);
        if !inner.phase.canaries_on_target() || !inner.authority.decides() {
            return;
        }
        let Some(target) = inner.phase.target() else {
            return;
        };
        let canaries = target.canaries.clone();
        let verdict = match (&inner.settings.gates, &inner.start) {
            (None, _) => None,
            (Some(gates), Some(start)) => {
                let counters = signals::counters(&self.state.metrics, &canaries);
                let health = signals::health(&self.state, &canaries);
                Some(gates::evaluate(
                    gates,
                    &counters.since(&start.counters),
                    start.baseline.as_ref(),
                    health,
                    Some(start.health),
                ))
            }
            (Some(_), None) => None,
        };
        let judgement = match verdict.as_ref().map(|v| v.outcome) {
            None | Some(Outcome::Pass) => Judgement::Pass,
            Some(Outcome::Fail) => Judgement::Fail,
            Some(Outcome::Inconclusive) => Judgement::Inconclusive,
        };
        let reason = || {
            verdict
                .as_ref()
                .and_then(Verdict::reason)
                .map(|r| {
                    format!(
                        "gate {} {}: value {}, baseline {}, threshold {}",
                        r.gate,
                        match r.outcome {
                            Outcome::Fail => "failed",
                            _ => "inconclusive",
                        },
                        r.value.map_or("n/a".into(), |v| format!("{v:.4}")),
                        r.baseline.map_or("n/a".into(), |v| format!("{v:.4}")),
                        r.threshold,
                    ) + &if r.detail.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", r.detail)
                    }
                })
                .unwrap_or_default()
        };
        let timing = timing(&inner.settings);
        let stepped = inner.phase.judge(now, judgement, reason, timing);
        inner.verdict = verdict;
        if let Some((transition, promoted)) = stepped {
            self.transitioned(&mut inner, &transition, now);
            if let Some(candidate) = promoted {
                self.promote(&mut inner, candidate);
            }
            if transition != Transition::Extended && transition != Transition::Held {
                let origin = inner.origin;
                self.restage(&mut inner, origin, now);
            } else {
                self.export(&inner);
            }
            return;
        }
        // Only the gates' readings changed.
        self.export_metrics(&inner);
    }

    /// Keep a bake time of counters of the routes a rollout would canary, for the
    /// baseline of the next one.
    fn sample(&self, inner: &mut Inner, now: Instant) {
        let latest = inner.phase.newest().map_or(&inner.stable, |c| &c.desired);
        let routes = canaries(&inner.settings.canary, latest.routes());
        if routes != inner.history_routes {
            inner.history.clear();
            inner.history_routes = routes;
        }
        let counters = signals::counters(&self.state.metrics, &inner.history_routes);
        inner.history.push_back((now, counters));
        let keep = inner.settings.bake + period(&inner.settings) * 2;
        while inner
            .history
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > keep)
        {
            inner.history.pop_front();
        }
    }

    /// The pending candidate became stable.
    fn promote(&self, inner: &mut Inner, candidate: Candidate) {
        inner.stable = candidate.desired;
        inner.stable_revision = candidate.revision;
        inner.fallback = Files::new();
        inner.phase = Phase::Idle;
    }

    /// An operator's action from the admin endpoint; refused in Kubernetes mode, where
    /// actions go through the shared record.
    pub fn act(&self, action: Action) -> Result<Status, ActError> {
        if let Some(error) = self.lock().authority.refuses_admin_actions() {
            return Err(error);
        }
        self.act_now(action).map_err(ActError::from)
    }

    /// Take an operator's action.
    fn act_now(&self, action: Action) -> Result<Status, NotApplicable> {
        let mut inner = self.lock();
        let now = Instant::now();
        let timing = timing(&inner.settings);
        match action {
            Action::Resume => {
                let (transition, promoted) = inner.phase.resume(now, timing)?;
                self.transitioned(&mut inner, &transition, now);
                if let Some(candidate) = promoted {
                    self.promote(&mut inner, candidate);
                }
                // Labels may have changed since the freeze: the bake tries the canaries
                // chosen now, and freezes again if there are none to try.
                let settings = inner.settings.clone();
                if let Some(target) = inner.phase.baking_mut() {
                    target.canaries = canaries(&settings.canary, target.desired.routes());
                    if let Some(reason) = cannot_canary(&settings, target) {
                        let transition = inner.phase.freeze(now, reason);
                        self.transitioned(&mut inner, &transition, now);
                    }
                }
            }
            Action::Abort => {
                let (transition, withdrawn) = inner.phase.abort(now, timing)?;
                if matches!(inner.phase, Phase::Idle) {
                    inner.aborted = Some((withdrawn.revision, withdrawn.desired));
                }
                self.transitioned(&mut inner, &transition, now);
            }
            Action::Promote => {
                let (transition, candidate) = inner.phase.promote()?;
                self.transitioned(&mut inner, &transition, now);
                self.promote(&mut inner, candidate);
            }
        }
        tracing::info!(action = ?action, "rollout action by an operator");
        let origin = inner.origin;
        self.restage(&mut inner, origin, now);
        Ok(status(&inner, now))
    }

    /// The rollout now.
    pub fn status(&self) -> Status {
        status(&self.lock(), Instant::now())
    }

    /// How often [`Rollout::run`] ticks with the current settings.
    pub fn period(&self) -> Duration {
        period(&self.lock().settings)
    }

    /// Tick until shutdown.
    pub async fn run(self: Arc<Self>, mut shutdown: pingora::server::ShutdownWatch) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.period()) => {}
                _ = shutdown.changed() => return,
            }
            let rollout = self.clone();
            // Reading the counters and compiling are blocking work.
            let _ = tokio::task::spawn_blocking(move || rollout.tick(Instant::now())).await;
        }
    }

    /// Record a transition: one log line, one count, and a new baseline when a bake
    /// starts.
    fn transitioned(&self, inner: &mut Inner, transition: &Transition, now: Instant) {
        inner.phase_since = now;
        inner.phase_wall = shared::wall_now();
        shared::announce(inner, transition);
        let target = inner.phase.target().map(|c| c.revision);
        let reason = match &inner.phase {
            Phase::Frozen { reason, .. } | Phase::Held { reason, .. } => reason.as_str(),
            _ => "",
        };
        tracing::info!(
            transition = transition.label(),
            phase = inner.phase.label(),
            stable = inner.stable_revision,
            target,
            reason,
            "rollout transition"
        );
        self.count(transition.label());
        if matches!(
            transition,
            Transition::Started | Transition::Superseded | Transition::Resumed
        ) || (transition == &Transition::Aborted && inner.phase.canaries_on_target())
        {
            self.begin_bake(inner, now);
        }
        if matches!(inner.phase, Phase::Idle) {
            inner.start = None;
        }
    }

    fn count(&self, label: &str) {
        self.state
            .metrics
            .rollout_transitions
            .with_label_values(&[label])
            .inc();
    }

    /// Take the canaries' counters now and their baseline: the same routes over up to
    /// a bake time before.
    fn begin_bake(&self, inner: &mut Inner, now: Instant) {
        inner.verdict = None;
        let Some(target) = inner.phase.target() else {
            return;
        };
        let routes = target.canaries.clone();
        let counters = signals::counters(&self.state.metrics, &routes);
        let health = signals::health(&self.state, &routes);
        let baseline = (routes == inner.history_routes)
            .then(|| {
                let horizon = now.checked_sub(inner.settings.bake);
                inner
                    .history
                    .iter()
                    .find(|(t, _)| horizon.is_none_or(|h| *t >= h))
                    .map(|(_, c)| counters.since(c))
            })
            .flatten();
        inner.start = Some(Start {
            counters,
            baseline,
            health,
        });
    }

    /// The state changed: update the metrics and tell whoever shares the state.
    fn export(&self, inner: &Inner) {
        self.changes.send_modify(|n| *n += 1);
        self.export_metrics(inner);
    }

    /// Phase, revisions and gates as metrics.
    fn export_metrics(&self, inner: &Inner) {
        let metrics = &self.state.metrics;
        for phase in Phase::LABELS {
            metrics
                .rollout_phase
                .with_label_values(&[phase])
                .set(i64::from(phase == inner.phase.label()));
        }
        let revision = |r: u64| i64::try_from(r).unwrap_or(i64::MAX);
        metrics
            .rollout_revision
            .with_label_values(&["stable"])
            .set(revision(inner.stable_revision));
        match inner
            .phase
            .target()
            .filter(|_| inner.phase.canaries_on_target())
        {
            Some(target) => metrics
                .rollout_revision
                .with_label_values(&["canary"])
                .set(revision(target.revision)),
            None => metrics
                .rollout_revision
                .with_label_values(&["canary"])
                .set(revision(inner.stable_revision)),
        }
        metrics.rollout_gate_value.reset();
        if let Some(verdict) = &inner.verdict {
            for reading in &verdict.readings {
                if let Some(value) = reading.value {
                    metrics
                        .rollout_gate_value
                        .with_label_values(&[reading.gate])
                        .set(value);
                }
                metrics
                    .rollout_gate_threshold
                    .with_label_values(&[reading.gate])
                    .set(reading.threshold);
            }
        }
    }
}

enum Staging {
    /// A revision's inputs do not compile (only possible for the stable revision with
    /// newer file contents).
    Invalid(Vec<ConfigError>),
    /// The two halves claim the same hostname or destination.
    Split(Vec<ConfigError>),
}

/// Why `candidate` cannot roll out on canaries: its canary selection matches no route
/// or every route. Only a cluster's routes get here (a file with such a selection does
/// not compile); the revision freezes, naming the field, and nothing else is held up.
fn cannot_canary(settings: &RolloutSettings, candidate: &Candidate) -> Option<String> {
    let (field, problem) = selection_problem(settings, candidate.desired.routes())?;
    Some(format!(
        "cannot roll out on canaries: GatewayConfig {field}: {problem}; label a canary route and resume, or promote or abort"
    ))
}

fn timing(settings: &RolloutSettings) -> Timing {
    Timing {
        bake: settings.bake,
        max_bake: settings.max_bake,
    }
}

fn status(inner: &Inner, now: Instant) -> Status {
    let target = inner.phase.target();
    let (queued, reason, deadline) = match &inner.phase {
        Phase::Frozen { queued, reason, .. } => (
            queued.as_ref().map(|q| q.revision),
            Some(reason.clone()),
            None,
        ),
        Phase::Held { reason, .. } => (None, Some(reason.clone()), None),
        Phase::Baking { deadline, .. } => (
            None,
            None,
            Some(deadline.saturating_duration_since(now).as_secs_f64()),
        ),
        Phase::Idle => (None, None, None),
    };
    Status {
        enabled: inner.settings.enabled,
        authority: inner.authority.label(),
        stable_id: inner.stable.revision(),
        target_id: target.map(|c| c.desired.revision()),
        behind: inner.authority.behind(),
        phase: inner.phase.label(),
        stable_revision: inner.stable_revision,
        target_revision: target.map(|c| c.revision),
        canaries: target
            .map(|c| c.canaries.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        queued_revision: queued,
        seconds_in_phase: now.duration_since(inner.phase_since).as_secs_f64(),
        seconds_to_deadline: deadline,
        reason,
        aborted_revision: inner.aborted.as_ref().map(|(r, _)| *r),
        gates: inner
            .verdict
            .as_ref()
            .map(|v| v.readings.clone())
            .unwrap_or_default(),
    }
}
