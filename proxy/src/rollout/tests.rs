//! The rollout state machine on tokio's paused clock, and the gates' judgement.

use std::collections::BTreeSet;
use std::time::Duration;

use apigate_control::rollout::{Desired, Gates};
use apigate_control::RouteId;
use tokio::time::Instant;

use super::gates::{evaluate, Counters, Health, Latency, Outcome, BOUNDS};
use super::phase::{Candidate, Judgement, Phase, Timing, Transition};

const S: Duration = Duration::from_secs(1);
const TIMING: Timing = Timing {
    bake: Duration::from_secs(60),
    max_bake: Duration::from_secs(180),
};

fn candidate(revision: u64) -> Candidate {
    Candidate {
        revision,
        desired: Desired::default(),
        canaries: BTreeSet::from([RouteId {
            namespace: "garden".into(),
            name: "canary".into(),
        }]),
    }
}

fn reason() -> String {
    "why".into()
}

#[tokio::test(start_paused = true)]
async fn a_passing_revision_is_promoted_at_the_deadline_not_before() {
    let mut phase = Phase::default();
    let t0 = Instant::now();
    assert_eq!(phase.propose(t0, candidate(2), TIMING), Transition::Started);
    tokio::time::advance(59 * S).await;
    assert!(phase
        .judge(Instant::now(), Judgement::Pass, reason, TIMING)
        .is_none());
    assert_eq!(phase.label(), "baking");
    tokio::time::advance(S).await;
    let (transition, promoted) = phase
        .judge(Instant::now(), Judgement::Pass, reason, TIMING)
        .unwrap();
    assert_eq!(transition, Transition::Promoted);
    assert_eq!(promoted.unwrap().revision, 2);
}

#[tokio::test(start_paused = true)]
async fn a_failing_gate_freezes_at_once_and_a_newer_revision_queues_behind() {
    let mut phase = Phase::default();
    phase.propose(Instant::now(), candidate(2), TIMING);
    tokio::time::advance(5 * S).await;
    let (transition, _) = phase
        .judge(Instant::now(), Judgement::Fail, reason, TIMING)
        .unwrap();
    assert_eq!(transition, Transition::Frozen);
    assert!(!phase.canaries_on_target(), "canaries are back on stable");
    assert_eq!(
        phase.propose(Instant::now(), candidate(3), TIMING),
        Transition::Queued
    );
    assert_eq!(phase.target().unwrap().revision, 2);
    assert_eq!(phase.newest().unwrap().revision, 3);
    // Nothing promotes a frozen rollout by itself.
    tokio::time::advance(3600 * S).await;
    assert!(phase
        .judge(Instant::now(), Judgement::Pass, reason, TIMING)
        .is_none());
    assert_eq!(phase.label(), "frozen");
}

#[tokio::test(start_paused = true)]
async fn inconclusive_gates_extend_the_bake_up_to_the_limit_then_hold() {
    let mut phase = Phase::default();
    phase.propose(Instant::now(), candidate(2), TIMING);
    for expected in [Transition::Extended, Transition::Extended] {
        tokio::time::advance(60 * S).await;
        let (t, _) = phase
            .judge(Instant::now(), Judgement::Inconclusive, reason, TIMING)
            .unwrap();
        assert_eq!(t, expected);
    }
    tokio::time::advance(60 * S).await;
    let (t, _) = phase
        .judge(
            Instant::now(),
            Judgement::Inconclusive,
            || "too little traffic".into(),
            TIMING,
        )
        .unwrap();
    assert_eq!(t, Transition::Held);
    match &phase {
        Phase::Held { reason, .. } => assert_eq!(reason, "too little traffic"),
        other => panic!("{other:?}"),
    }
    // Held keeps the canaries on the target, a failure still freezes it, and a pass
    // alone never promotes it.
    assert!(phase.canaries_on_target());
    assert!(phase
        .judge(Instant::now(), Judgement::Pass, reason, TIMING)
        .is_none());
    let (t, _) = phase
        .judge(Instant::now(), Judgement::Fail, reason, TIMING)
        .unwrap();
    assert_eq!(t, Transition::Frozen);
}

#[tokio::test(start_paused = true)]
async fn a_newer_revision_restarts_the_bake() {
    let mut phase = Phase::default();
    phase.propose(Instant::now(), candidate(2), TIMING);
    tokio::time::advance(50 * S).await;
    assert_eq!(
        phase.propose(Instant::now(), candidate(3), TIMING),
        Transition::Superseded
    );
    tokio::time::advance(30 * S).await;
    assert!(phase
        .judge(Instant::now(), Judgement::Pass, reason, TIMING)
        .is_none());
    tokio::time::advance(30 * S).await;
    let (_, promoted) = phase
        .judge(Instant::now(), Judgement::Pass, reason, TIMING)
        .unwrap();
    assert_eq!(promoted.unwrap().revision, 3);
}

#[tokio::test(start_paused = true)]
async fn operators_resume_abort_and_promote() {
    let now = Instant::now();
    // Resume a freeze: the queued (newest) revision bakes.
    let mut phase = Phase::default();
    phase.propose(now, candidate(2), TIMING);
    phase.judge(now, Judgement::Fail, reason, TIMING);
    phase.propose(now, candidate(3), TIMING);
    assert_eq!(phase.resume(now, TIMING).unwrap().0, Transition::Resumed);
    assert_eq!(phase.target().unwrap().revision, 3);
    assert!(phase.canaries_on_target());
    // Abort a freeze with a queued revision: the queued one starts its own rollout.
    let mut phase = Phase::default();
    phase.propose(now, candidate(2), TIMING);
    phase.judge(now, Judgement::Fail, reason, TIMING);
    phase.propose(now, candidate(3), TIMING);
    let (t, withdrawn) = phase.abort(now, TIMING).unwrap();
    assert_eq!((t, withdrawn.revision), (Transition::Aborted, 2));
    assert_eq!(phase.label(), "baking");
    assert_eq!(phase.target().unwrap().revision, 3);
    // Abort the rest: idle.
    let (_, withdrawn) = phase.abort(now, TIMING).unwrap();
    assert_eq!(withdrawn.revision, 3);
    assert_eq!(phase.label(), "idle");
    // Nothing to act on.
    assert!(phase.abort(now, TIMING).is_err());
    assert!(phase.resume(now, TIMING).is_err());
    assert!(phase.promote().is_err());
    // Promote skips the bake.
    phase.propose(now, candidate(4), TIMING);
    assert_eq!(phase.promote().unwrap().1.revision, 4);
    assert_eq!(phase.label(), "idle");
}

fn traffic(requests: u64, own_failures: u64) -> Counters {
    let mut latency = Latency::default();
    // Every request in the 10 ms bucket.
    for (i, bound) in BOUNDS.iter().enumerate() {
        latency.buckets[i] = if *bound >= 0.01 { requests } else { 0 };
    }
    latency.count = requests;
    Counters {
        requests,
        own_failures,
        allowed: 20,
        latency,
        ..Counters::default()
    }
}

const HEALTHY: Health = Health {
    total: 3,
    serving: 3,
};

#[test]
fn the_success_gate_fails_past_its_threshold_and_worse_than_the_baseline() {
    let gates = Gates::default();
    let v = evaluate(
        &gates,
        &traffic(1000, 50),
        Some(&traffic(1000, 0)),
        HEALTHY,
        Some(HEALTHY),
    );
    assert_eq!(v.outcome, Outcome::Fail);
    assert_eq!(v.reason().unwrap().gate, "success_rate");
    // Already as bad before the change: not the change's fault.
    let v = evaluate(
        &gates,
        &traffic(1000, 50),
        Some(&traffic(1000, 60)),
        HEALTHY,
        Some(HEALTHY),
    );
    assert_eq!(v.outcome, Outcome::Pass, "{v:?}");
    // Within the threshold.
    let v = evaluate(
        &gates,
        &traffic(1000, 5),
        Some(&traffic(1000, 0)),
        HEALTHY,
        Some(HEALTHY),
    );
    assert_eq!(v.outcome, Outcome::Pass, "{v:?}");
}

#[test]
fn too_little_traffic_is_inconclusive_and_says_what_is_missing() {
    let gates = Gates::default();
    let v = evaluate(&gates, &traffic(10, 10), None, HEALTHY, Some(HEALTHY));
    assert_eq!(v.outcome, Outcome::Inconclusive);
    let reading = v.reason().unwrap();
    assert_eq!(reading.gate, "success_rate");
    assert_eq!(reading.detail, "10 observed, 100 needed");
}

#[test]
fn replicas_turning_unready_fail_the_health_gate_without_traffic() {
    let gates = Gates::default();
    let down = Health {
        total: 3,
        serving: 0,
    };
    let v = evaluate(&gates, &Counters::default(), None, down, Some(HEALTHY));
    assert_eq!(v.outcome, Outcome::Fail);
    assert_eq!(v.reason().unwrap().gate, "healthy_backends");
}

#[test]
fn a_slower_p99_fails_only_above_the_floor() {
    let gates = Gates::default();
    let mut slow = traffic(1000, 0);
    // Everything in the 0.5 s bucket: p99 ≈ 0.5 s against ≈ 10 ms before.
    for (i, bound) in BOUNDS.iter().enumerate() {
        slow.latency.buckets[i] = if *bound >= 0.5 { 1000 } else { 0 };
    }
    let v = evaluate(
        &gates,
        &slow,
        Some(&traffic(1000, 0)),
        HEALTHY,
        Some(HEALTHY),
    );
    assert_eq!(v.outcome, Outcome::Fail);
    assert_eq!(v.reason().unwrap().gate, "p99_latency_ratio");
    // 10 ms → 25 ms is a ratio of 2.5 but below the 100 ms floor.
    let mut quick = traffic(1000, 0);
    for (i, bound) in BOUNDS.iter().enumerate() {
        quick.latency.buckets[i] = if *bound >= 0.025 { 1000 } else { 0 };
    }
    let v = evaluate(
        &gates,
        &quick,
        Some(&traffic(1000, 0)),
        HEALTHY,
        Some(HEALTHY),
    );
    assert_eq!(v.outcome, Outcome::Pass, "{v:?}");
}

#[test]
fn p99_is_interpolated_like_histogram_quantile() {
    let mut l = Latency::default();
    // 100 observations, all in (5 ms, 10 ms].
    for (i, bound) in BOUNDS.iter().enumerate() {
        l.buckets[i] = if *bound >= 0.01 { 100 } else { 0 };
    }
    l.count = 100;
    let p99 = l.p99().unwrap();
    assert!((p99 - 0.00995).abs() < 1e-6, "{p99}");
    assert_eq!(Latency::default().p99(), None);
}

/// Kubernetes mode: replicas deciding through the shared record.
mod shared {
    use std::sync::Arc;
    use std::time::Duration;

    use apigate_control::inputs::Inputs;
    use apigate_control::model::parse_documents;
    use apigate_control::Snapshot;

    use crate::install::Origin;
    use crate::metrics::Metrics;
    use crate::rollout::shared::RecordName;
    use crate::rollout::{ActError, Action, Rollout};
    use crate::state::State;

    const GATEWAY: &str = "apiVersion: apigate.dev/v1alpha1
kind: GatewayConfig
metadata: {name: gw}
spec:
  listeners: [{name: https, address: '127.0.0.1:0'}]
  rollout: {enabled: true, bakeTime: 60s, gates: {enabled: false}}
";

    /// Routes `a` (canary) and `b`, with `extra` hostnames (`NAME` is the route's).
    fn routes(extra: &str) -> String {
        route_doc("a", true, extra) + &route_doc("b", false, extra)
    }

    /// One passthrough route.
    fn route_doc(name: &str, canary: bool, extra: &str) -> String {
        let extra = extra.replace("NAME", name);
        format!(
            "---
apiVersion: apigate.dev/v1alpha1
kind: ApiServerRoute
metadata: {{name: {name}, namespace: shoot--{name}, labels: {{apigate.dev/canary: '{canary}'}}}}
spec:
  hostnames: [{name}.example.com{extra}]
  mode: passthrough
  backends: {{static: ['127.0.0.1:6443']}}
"
        )
    }

    /// Whether route `name` is served on this replica.
    fn served(state: &State, name: &str) -> bool {
        state
            .load()
            .snapshot
            .routes
            .iter()
            .any(|r| r.id.name == name)
    }

    /// As the Kubernetes source delivers them.
    fn inputs(text: &str) -> Inputs {
        Inputs {
            scope: apigate_control::inputs::Scope::Cluster,
            objects: parse_documents(text, "test.yaml").unwrap(),
            files: Default::default(),
        }
    }

    fn name() -> RecordName {
        RecordName {
            namespace: "apigate-system".into(),
            name: "gw".into(),
        }
    }

    /// A replica whose source delivered `routes`.
    fn replica(routes: &str) -> (Arc<State>, Arc<Rollout>) {
        let base = inputs(GATEWAY);
        let state = State::new(apigate_control::compile(&base).unwrap(), Metrics::new());
        let rollout = Rollout::for_kubernetes(state.clone(), base, Some(name()));
        deliver(&rollout, routes);
        (state, rollout)
    }

    fn deliver(rollout: &Rollout, routes: &str) {
        let live = inputs(&format!("{GATEWAY}{routes}"));
        let snapshot: Snapshot = apigate_control::compile(&live).unwrap();
        rollout.submit_compiled(live, snapshot, Origin::Kubernetes);
    }

    /// How many hostnames route `name` serves on this replica.
    fn hostnames(state: &State, name: &str) -> usize {
        let active = state.load();
        let route = active
            .snapshot
            .routes
            .iter()
            .find(|r| r.id.name == name)
            .expect("route served");
        route.hostnames.len()
    }

    fn wider() -> String {
        routes(", wide-NAME.example.com")
    }

    #[tokio::test(start_paused = true)]
    async fn followers_serve_the_record_and_a_new_leader_continues_to_the_same_deadline() {
        let old = routes("");
        let (leader_state, leader) = replica(&old);
        let (follower_state, follower) = replica(&old);
        assert_eq!(
            hostnames(&follower_state, "b"),
            1,
            "the first sync applies at once"
        );
        leader.lead(None, name());

        // A loosening revision: only the leader starts a rollout.
        deliver(&leader, &wider());
        deliver(&follower, &wider());
        assert_eq!(leader.status().phase, "baking");
        assert_eq!(
            follower.status().phase,
            "idle",
            "followers wait for the record"
        );
        assert_eq!(hostnames(&follower_state, "a"), 1);

        let record = leader.record("leader-0");
        assert_eq!(record.phase, "Baking");
        assert_eq!(record.canaries, vec!["shoot--a/a".to_string()]);
        assert_eq!(
            record.stable_routes.len(),
            2,
            "both routes differ: {record:?}"
        );
        follower.follow(&record);
        let status = follower.status();
        assert_eq!(status.phase, "baking");
        assert_eq!(status.authority, "follower");
        assert_eq!(status.target_id, leader.status().target_id);
        assert_eq!(status.stable_id, leader.status().stable_id);
        assert_eq!(
            hostnames(&follower_state, "a"),
            2,
            "the canary runs the target"
        );
        assert_eq!(hostnames(&follower_state, "b"), 1, "the rest stays stable");
        assert_eq!(hostnames(&leader_state, "b"), 1);

        // A replica that starts now never saw the stable revision: the record
        // rebuilds it.
        let (late_state, late) = replica(&wider());
        assert_eq!(hostnames(&late_state, "b"), 2);
        late.follow(&record);
        assert_eq!(late.status().behind, None);
        assert_eq!(
            hostnames(&late_state, "b"),
            1,
            "stable rebuilt from the record"
        );
        assert_eq!(hostnames(&late_state, "a"), 2);

        // Operators act through the record, not the admin endpoint.
        assert!(matches!(
            follower.act(Action::Abort),
            Err(ActError::Shared { .. })
        ));

        // The leader dies 30 s into the bake; the follower takes over from the record
        // and promotes at the recorded deadline, not a full bake later.
        tokio::time::advance(Duration::from_secs(30)).await;
        drop(leader);
        follower.lead(Some(&record), name());
        assert_eq!(follower.status().authority, "leader");
        assert_eq!(follower.status().phase, "baking");
        follower.tick(tokio::time::Instant::now());
        assert_eq!(follower.status().phase, "baking");
        tokio::time::advance(Duration::from_secs(31)).await;
        follower.tick(tokio::time::Instant::now());
        let status = follower.status();
        assert_eq!(status.phase, "idle", "promoted at the recorded deadline");
        assert_eq!(status.stable_id, record.target_revision.clone().unwrap());
        assert_eq!(hostnames(&follower_state, "b"), 2);
        let announced: Vec<_> = follower
            .take_announcements()
            .into_iter()
            .map(|a| a.reason)
            .collect();
        assert_eq!(announced, vec!["Promoted"]);

        // The others follow the new record.
        let promoted = follower.record("leader-1");
        assert_eq!(promoted.phase, "Idle");
        assert!(promoted.stable_routes.is_empty());
        late.follow(&promoted);
        assert_eq!(hostnames(&late_state, "b"), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_64_events_wait_and_the_oldest_go_first() {
        let (_, leader) = replica(&routes(""));
        leader.lead(None, name());
        // Each revision a new loosening: an Event each, none published meanwhile.
        for i in 0..100 {
            deliver(&leader, &routes(&format!(", w{i}-NAME.example.com")));
        }
        let newest = apigate_control::rollout::Desired::of(&inputs(&format!(
            "{GATEWAY}{}",
            routes(", w99-NAME.example.com")
        )));
        let events = leader.take_announcements();
        assert_eq!(events.len(), 64);
        let last = events.last().expect("events");
        assert!(
            last.note.contains(&newest.revision()),
            "the newest Event is kept: {last:?}"
        );
        assert!(leader.take_announcements().is_empty(), "taken once");
    }

    #[tokio::test(start_paused = true)]
    async fn an_aborted_revision_stays_withdrawn_under_a_new_leader() {
        let (_, leader) = replica(&routes(""));
        let (follower_state, follower) = replica(&routes(""));
        leader.lead(None, name());
        deliver(&leader, &wider());
        deliver(&follower, &wider());
        assert_eq!(leader.status().phase, "baking");
        leader
            .act_from_record(
                apigate_control::source::kubernetes::rollout_record::RolloutAction::Abort,
            )
            .unwrap();
        let record = leader.record("leader-0");
        assert_eq!(record.phase, "Idle");
        let withdrawn =
            apigate_control::rollout::Desired::of(&inputs(&format!("{GATEWAY}{}", wider())));
        assert_eq!(record.aborted_revision, Some(withdrawn.revision()));
        follower.follow(&record);
        assert_eq!(hostnames(&follower_state, "a"), 1, "withdrawn everywhere");
        drop(leader);
        follower.lead(Some(&record), name());
        assert_eq!(follower.status().phase, "idle", "not rolled out again");
        assert_eq!(hostnames(&follower_state, "a"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_revision_with_no_canary_to_try_freezes_and_holds_nothing_else_up() {
        let unlabelled = |extra: &str| routes(extra).replace("canary: 'true'", "canary: 'false'");
        let (state, leader) = replica(&unlabelled(""));
        leader.lead(None, name());
        assert_eq!(hostnames(&state, "a"), 1, "the first sync applies at once");
        // The cluster's routes compile although no route is a canary...
        deliver(&leader, &unlabelled(", wide-NAME.example.com"));
        // ...and the revision that cannot be tried on a canary freezes, naming the field.
        let status = leader.status();
        assert_eq!(status.phase, "frozen");
        let reason = status.reason.unwrap_or_default();
        assert!(
            reason.contains("spec.rollout.canary.label") && reason.contains("selects no route"),
            "{reason}"
        );
        assert_eq!(hostnames(&state, "a"), 1, "not pushed to every route");
        assert_eq!(hostnames(&state, "b"), 1);
        // A canary labelled afterwards, then resume: the bake tries it.
        deliver(&leader, &wider());
        leader.act_now(Action::Resume).unwrap();
        let status = leader.status();
        assert_eq!(status.phase, "baking");
        assert_eq!(status.canaries, vec!["shoot--a/a".to_string()]);
        assert_eq!(hostnames(&state, "a"), 2);
        assert_eq!(hostnames(&state, "b"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_garbled_or_far_deadline_in_the_record_neither_panics_nor_promotes_at_once_and_is_capped(
    ) {
        for deadline in [
            "not a time",
            "9999-12-31T23:59:59Z",
            "2100-01-01T00:00:00Z",
            "1970-01-01T00:00:00Z",
        ] {
            let (_, leader) = replica(&routes(""));
            leader.lead(None, name());
            deliver(&leader, &wider());
            let mut record = leader.record("leader-0");
            record.deadline = Some(deadline.into());
            record.limit = Some(deadline.into());
            record.since = Some(deadline.into());
            let (_, next) = replica(&routes(""));
            deliver(&next, &wider());
            assert!(next.lead(Some(&record), name()));
            next.tick(tokio::time::Instant::now());
            let expected = if deadline.starts_with("1970") {
                "idle" // a deadline long past: promoted, as the record says
            } else {
                "baking"
            };
            assert_eq!(next.status().phase, expected, "deadline {deadline}");
            if expected == "baking" {
                // No later than this replica's own longest bake (maxBakeTime, 240 s here).
                let left = next.status().seconds_to_deadline.unwrap_or(f64::MAX);
                assert!(left <= 240.0, "deadline {deadline}: {left} s to go");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_record_a_single_replica_decides_alone_as_in_file_mode() {
        let base = inputs(GATEWAY);
        let state = State::new(apigate_control::compile(&base).unwrap(), Metrics::new());
        let alone = Rollout::for_kubernetes(state.clone(), base, None);
        deliver(&alone, &routes(""));
        assert_eq!(alone.status().authority, "local");
        assert_eq!(hostnames(&state, "b"), 1, "the first sync applies at once");
        deliver(&alone, &wider());
        assert_eq!(alone.status().phase, "baking", "it rolls out by itself");
        assert_eq!(hostnames(&state, "b"), 1);
        assert!(
            alone.act(Action::Promote).is_ok(),
            "admin actions are taken here"
        );
        assert_eq!(hostnames(&state, "b"), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_leads_only_after_its_first_full_configuration() {
        let base = inputs(GATEWAY);
        let state = State::new(apigate_control::compile(&base).unwrap(), Metrics::new());
        let rollout = Rollout::for_kubernetes(state, base, Some(name()));
        assert!(!rollout.lead(None, name()), "nothing to decide with yet");
        assert_eq!(rollout.status().authority, "follower");
        deliver(&rollout, &routes(""));
        assert!(rollout.lead(None, name()));
        assert_eq!(rollout.status().authority, "leader");
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_started_during_a_freeze_serves_the_stable_revision_everywhere() {
        let (_, leader) = replica(&routes(""));
        leader.lead(None, name());
        deliver(&leader, &wider());
        // The record of a freeze on a target this new replica never saw (the routes
        // moved on to a revision queued behind it).
        let mut record = leader.record("leader-0");
        record.phase = "Frozen".into();
        record.target_revision = Some("0123456789abcdef".into());
        let (state, late) = replica(&wider());
        assert_eq!(
            hostnames(&state, "a"),
            2,
            "its first sync: the newest routes"
        );
        assert!(
            late.follow(&record),
            "it serves the record's stable revision"
        );
        assert_eq!(hostnames(&state, "a"), 1, "the canary too: it is frozen");
        assert_eq!(hostnames(&state, "b"), 1);
        let behind = late.status().behind.unwrap_or_default();
        assert!(behind.contains("not seen here"), "{behind}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_applies_a_revocation_at_once_while_a_loosening_waits_for_the_record() {
        let (state, follower) = replica(&routes(""));
        // A loosening of route a the leader has not recorded yet: it waits...
        let loosened = route_doc("a", true, ", wide-a.example.com") + &route_doc("b", false, "");
        deliver(&follower, &loosened);
        assert_eq!(hostnames(&state, "a"), 1);
        // ...but route b removed on top of it is a revocation: at once.
        deliver(&follower, &route_doc("a", true, ", wide-a.example.com"));
        assert!(!served(&state, "b"), "the removed route is gone at once");
        assert_eq!(hostnames(&state, "a"), 1, "the loosening still waits");
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_applies_a_tightening_at_once_without_the_record() {
        let (state, follower) = replica(&wider());
        assert_eq!(hostnames(&state, "b"), 2);
        deliver(&follower, &routes(""));
        assert_eq!(hostnames(&state, "b"), 1, "a removed hostname never waits");
        assert_eq!(follower.status().phase, "idle");
    }
}
