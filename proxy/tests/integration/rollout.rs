//! Canary rollouts of configuration, end to end in file mode: a bad revision freezes
//! on the canary route and never reaches the other; a tightening during the freeze
//! applies everywhere at once; a good revision is promoted after the bake; requests
//! keep succeeding through all of it.

use std::time::{Duration, Instant};

use apigate_control::model::{Balancing, GatesSpec, RolloutSpec};
use apigate_test_support::client::{ClientTls, H2Client};
use apigate_test_support::config::{route, Config};

use crate::support::{Harness, OTHER_HOST};

/// Route `garden-test/shoot` (HOST) is the canary, on replicas 0 and 1;
/// `garden-other/other` (OTHER_HOST) is not, on replica 2. Bake 2 s.
fn canary_setup(config: &mut Config) {
    let backends: Vec<std::net::SocketAddr> = config.routes[0]
        .spec
        .backends
        .static_addresses
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    config.routes[0].spec.backends.static_addresses =
        backends[..2].iter().map(ToString::to_string).collect();
    config.routes[0]
        .metadata
        .labels
        .insert("apigate.dev/canary".into(), "true".into());
    config.routes.push(route::terminate(
        "other",
        "garden-other",
        &[OTHER_HOST],
        &backends[2..],
    ));
    config.gateway.spec.rollout = Some(RolloutSpec {
        enabled: true,
        bake_time: Some(apigate_control::model::Duration(Duration::from_secs(2))),
        max_bake_time: Some(apigate_control::model::Duration(Duration::from_secs(4))),
        gates: GatesSpec {
            min_requests: Some(20),
            min_connections: Some(1),
            ..GatesSpec::default()
        },
        ..RolloutSpec::default()
    });
}

async fn other_client(h: &Harness) -> H2Client {
    let tls = ClientTls {
        server_name: OTHER_HOST.into(),
        ..h.tls(None)
    };
    H2Client::connect(h.addr(), &tls).await.unwrap()
}

async fn status(h: &Harness) -> serde_json::Value {
    serde_json::from_str(&h.admin_get("/rollout").await).unwrap()
}

async fn phase_becomes(h: &Harness, phase: &str, limit: Duration) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if status(h).await["phase"] == phase {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// Requests on the canary route and the other one, in turn.
struct Traffic {
    /// Whether the rollout reached the phase.
    reached: bool,
    /// Answered 200, canary then other.
    served: [u32; 2],
    /// Anything else, canary then other.
    failed: [u32; 2],
}

/// Alternate requests on both routes until the rollout is in `phase` (15 s at most).
async fn drive(h: &Harness, canary: &H2Client, other: &H2Client, phase: &str) -> Traffic {
    let mut traffic = Traffic {
        reached: false,
        served: [0; 2],
        failed: [0; 2],
    };
    let end = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < end {
        for (i, client) in [canary, other].into_iter().enumerate() {
            match client.get("/version", &[]).await {
                Ok(r) if r.status == 200 => traffic.served[i] += 1,
                _ => traffic.failed[i] += 1,
            }
        }
        if status(h).await["phase"] == phase {
            traffic.reached = true;
            break;
        }
    }
    traffic
}

/// `POST /rollout/<action>` from loopback: status and body.
async fn act(h: &Harness, action: &str) -> (u16, String) {
    h.admin_request("POST", &format!("/rollout/{action}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_revision_freezes_on_the_canary_and_a_tightening_still_applies_everywhere() {
    let mut h = Harness::start_with(3, canary_setup).await;
    let canary = h.h2(None).await;
    let other = other_client(&h).await;
    assert_eq!(status(&h).await["phase"], "idle");

    // The operator points both routes at the wrong upstream CA: 502s wherever it runs.
    let mut bad = h.config.clone();
    for r in &mut bad.routes {
        r.spec.upstream.as_mut().unwrap().ca_file = "server-ca.pem".into();
    }
    let written = Instant::now();
    std::fs::write(h.config_path(), bad.render()).unwrap();
    h.config = bad.clone();
    assert!(phase_becomes(&h, "baking", Duration::from_secs(5)).await);

    // Traffic on both routes until the canary's gates freeze the rollout.
    let traffic = drive(&h, &canary, &other, "frozen").await;
    let to_freeze = written.elapsed();
    assert!(traffic.reached, "the rollout froze");
    assert!(traffic.failed[0] >= 1, "the canary ran the bad revision");
    assert_eq!(
        traffic.failed[1], 0,
        "the other route never left the stable revision"
    );
    assert!(traffic.served[1] >= 1);
    let s = status(&h).await;
    let reason = s["reason"].as_str().unwrap();
    assert!(
        reason.contains("success_rate") || reason.contains("upstream_error_rate"),
        "{reason}"
    );
    assert_eq!(s["targetRevision"], 2);
    assert_eq!(s["canaries"][0], "garden-test/shoot");
    let m = h.metrics();
    assert_eq!(
        m.sum(
            "apigate_rollout_transitions_total",
            &[("transition", "frozen")]
        ),
        1.0
    );
    assert_eq!(m.sum("apigate_rollout_phase", &[("phase", "frozen")]), 1.0);
    eprintln!("bad revision → frozen in {to_freeze:?}");

    // The canary is back on the stable revision.
    assert_eq!(canary.get("/version", &[]).await.unwrap().status, 200);

    // During the freeze, the operator narrows the other route's allowlist (the file
    // still holds the bad CA): it applies at once, and closes the open connection.
    let mut tightened = bad.clone();
    tightened.routes[1].spec.access_control = Some(apigate_control::access::AccessControlSpec {
        rules: vec![apigate_control::access::RuleSpec {
            action: "allow".into(),
            address_type: None,
            cidrs: vec!["192.0.2.0/24".into()],
        }],
        default_action: None,
    });
    let written = Instant::now();
    std::fs::write(h.config_path(), tightened.render()).unwrap();
    let mut revoked = false;
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < end {
        if other.get("/version", &[]).await.is_err() {
            revoked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let to_revoke = written.elapsed();
    assert!(
        revoked,
        "the open connection of the tightened route was closed"
    );
    assert!(
        H2Client::connect(
            h.addr(),
            &ClientTls {
                server_name: OTHER_HOST.into(),
                ..h.tls(None)
            }
        )
        .await
        .is_err()
            || other_client(&h).await.get("/version", &[]).await.is_err(),
        "new connections to the tightened route are denied"
    );
    let s = status(&h).await;
    assert_eq!(s["phase"], "frozen", "the freeze stands");
    assert_eq!(
        h.metric(
            "apigate_rollout_transitions_total",
            &[("transition", "tightened")]
        ),
        1.0
    );
    eprintln!("tightening during a freeze → applied in {to_revoke:?}");

    // Abort: nothing changes for the routes; the source's revision stays withdrawn.
    let (code, body) = act(&h, "abort").await;
    assert_eq!(code, 200, "{body}");
    let s = status(&h).await;
    assert_eq!(s["phase"], "idle");
    assert_eq!(s["abortedRevision"], 3);
    assert_eq!(canary.get("/version", &[]).await.unwrap().status, 200);
    let (code, _) = act(&h, "resume").await;
    assert_eq!(code, 409, "nothing to resume");
    assert_eq!(
        h.metric(
            "apigate_rollout_transitions_total",
            &[("transition", "aborted")]
        ),
        1.0
    );
    // The file still holds the aborted revision; touching it does not restart it.
    let before = h.metrics().sum("apigate_config_revision", &[]);
    std::fs::write(h.config_path(), tightened.render()).unwrap();
    assert!(
        crate::support::eventually(Duration::from_secs(5), || h
            .metrics()
            .sum("apigate_config_revision", &[])
            > before)
        .await,
        "the touched file was read again"
    );
    let s = status(&h).await;
    assert_eq!(s["phase"], "idle", "{s}");
    assert_eq!(s["abortedRevision"], 3);
    assert_eq!(canary.get("/version", &[]).await.unwrap().status, 200);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_rollouts_off_applies_the_newest_revision_everywhere_at_once() {
    let mut h = Harness::start_with(3, |c| {
        canary_setup(c);
        let rollout = c.gateway.spec.rollout.as_mut().unwrap();
        rollout.bake_time = Some(apigate_control::model::Duration(Duration::from_secs(600)));
        rollout.max_bake_time = rollout.bake_time;
    })
    .await;
    let mut change = h.config.clone();
    for r in &mut change.routes {
        r.spec.balancing = Some(Balancing::RoundRobin);
    }
    std::fs::write(h.config_path(), change.render()).unwrap();
    assert!(phase_becomes(&h, "baking", Duration::from_secs(5)).await);
    change.gateway.spec.rollout.as_mut().unwrap().enabled = false;
    h.reload(change).await;
    let s = status(&h).await;
    assert_eq!(
        (s["enabled"].as_bool(), s["phase"].as_str()),
        (Some(false), Some("idle"))
    );
    let active = h.running().state.load();
    for route in &active.routes {
        assert_eq!(
            route.route.terminate().unwrap().balancing,
            Balancing::RoundRobin
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_revision_is_promoted_after_the_bake_with_no_failed_request() {
    let mut h = Harness::start_with(3, canary_setup).await;
    let canary = h.h2(None).await;
    let other = other_client(&h).await;
    let mut good = h.config.clone();
    for r in &mut good.routes {
        r.spec.balancing = Some(Balancing::RoundRobin);
    }
    let written = Instant::now();
    std::fs::write(h.config_path(), good.render()).unwrap();
    h.config = good;
    assert!(phase_becomes(&h, "baking", Duration::from_secs(5)).await);
    let balancing = |h: &Harness, host: &str| {
        let active = h.running().state.load();
        let route = active.route_for_sni(host).unwrap();
        route.route.terminate().unwrap().balancing
    };
    assert_eq!(balancing(&h, crate::support::HOST), Balancing::RoundRobin);
    assert_eq!(
        balancing(&h, OTHER_HOST),
        Balancing::LeastRequest,
        "not yet"
    );

    let traffic = drive(&h, &canary, &other, "idle").await;
    let to_promote = written.elapsed();
    assert!(traffic.reached, "promoted: {}", status(&h).await);
    let (failed, served) = (
        traffic.failed[0] + traffic.failed[1],
        traffic.served[0] + traffic.served[1],
    );
    assert_eq!(
        failed, 0,
        "no request failed during the rollout ({served} served)"
    );
    assert!(to_promote >= Duration::from_secs(2), "not before the bake");
    assert_eq!(balancing(&h, OTHER_HOST), Balancing::RoundRobin);
    let s = status(&h).await;
    assert_eq!(s["stableRevision"], 2);
    assert_eq!(
        h.metric(
            "apigate_rollout_transitions_total",
            &[("transition", "promoted")]
        ),
        1.0
    );
    eprintln!("good revision → promoted in {to_promote:?} ({served} requests, 0 failed)");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_are_off_by_default_and_every_revision_applies_at_once() {
    let mut h = Harness::start(1).await;
    let mut changed = h.config.clone();
    changed.routes[0].spec.balancing = Some(Balancing::RoundRobin);
    h.reload(changed).await;
    let active = h.running().state.load();
    let balancing = active.routes[0].route.terminate().unwrap().balancing;
    assert_eq!(balancing, Balancing::RoundRobin);
    let s = status(&h).await;
    assert_eq!(
        (s["enabled"].as_bool(), s["phase"].as_str()),
        (Some(false), Some("idle"))
    );
    h.stop().await;
}
