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
