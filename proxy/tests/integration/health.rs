//! Backend health with real replicas: active `/readyz` probes, graceful drain on
//! kube-apiserver's shutdown signals, slow start, probation, fair picking, and the
//! failures that must never take a replica out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use apigate_control::model::{EjectionSpec, HealthSpec, SlowStartSpec};
use apigate_fake_apiserver::{Condition, Replica, REPLICA_HEADER};
use apigate_test_support::client::{BodyStream, H2Client};
use apigate_test_support::config::{millis, secs, Config};

use crate::support::{base_config, eventually, Harness, Pki, ROUTE, TOKEN};

const PODS: &str = "/api/v1/namespaces/default/pods";

/// Probes every 200 ms (3 failures → unready, 2 passes → ready), a 2 s ramp.
fn fast_health(config: &mut Config) {
    let defaults = &mut config.gateway.spec.defaults;
    defaults.health = HealthSpec {
        interval: Some(millis(200)),
        timeout: Some(millis(150)),
        healthy_threshold: Some(2),
        unhealthy_threshold: Some(3),
        ..HealthSpec::default()
    };
    defaults.slow_start = SlowStartSpec {
        window: Some(secs(2)),
        min_weight_percent: None,
    };
}

/// `count` replicas that answer anonymous requests, `/readyz` included, with 401, as
/// kube-apiserver does with `--anonymous-auth=false`.
async fn refusing_anonymous(pki: &Pki, count: usize) -> Vec<Replica> {
    let mut options = pki.replica_options();
    options.anonymous_auth = false;
    apigate_fake_apiserver::spawn_many(count, "127.0.0.1".parse().unwrap(), options)
        .await
        .unwrap()
}

/// A watch of pods through apigate, and the index of the replica serving it.
async fn open_watch(h: &Harness, client: &H2Client) -> (BodyStream, usize) {
    let watch = client
        .stream(&format!("{PODS}?watch=true"), &[])
        .await
        .unwrap();
    let id = watch.headers[REPLICA_HEADER].to_str().unwrap().to_string();
    let index = index_of(h, &id);
    (watch, index)
}

fn index_of(h: &Harness, id: &str) -> usize {
    h.replicas.iter().position(|r| r.id() == id).unwrap()
}

/// Requests each replica received while `count` sequential requests were sent.
async fn sequential(h: &Harness, count: usize) -> Vec<u64> {
    let before: Vec<u64> = h.replicas.iter().map(Replica::requests_total).collect();
    let client = h.h2(None).await;
    client
        .spread(PODS, &[], REPLICA_HEADER, count, 1)
        .await
        .unwrap();
    h.replicas
        .iter()
        .zip(before)
        .map(|(r, b)| r.requests_total() - b)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_readyz_fails_leaves_the_rotation_and_returns_through_slow_start() {
    let h = Harness::start_with(3, fast_health).await;
    let target = h.replicas[0].local_addr();
    assert!(h.wait_for_state(target, "healthy", secs(3).0).await);
    // It loses its storage: /readyz fails with the etcd check, requests still served.
    h.replicas[0].set_condition(Condition::NotReady);
    let failed = tokio::time::Instant::now();
    assert!(
        h.wait_for_state(target, "unready", Duration::from_secs(5))
            .await
    );
    // Three failed probes 200 ms (±10%) apart; polling adds a little.
    let took = failed.elapsed();
    assert!(took < Duration::from_secs(3), "left after {took:?}");
    let report = &h.backends().await[&target.to_string()];
    assert!(report["probe"]["failed"].as_u64().unwrap() >= 3, "{report}");
    assert!(
        report["probe"]["last_duration_ms"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(
        h.metric(
            "apigate_probe_last_duration_seconds",
            &[("backend", &target.to_string())]
        ) > 0.0
    );
    let sent = sequential(&h, 60).await;
    assert_eq!(
        sent[0], 0,
        "an unready replica gets no new request: {sent:?}"
    );

    // Ready again: two passed probes bring it back, ramping up from 10%.
    h.replicas[0].set_condition(Condition::Ready);
    assert!(
        h.wait_for_state(target, "slow_start", Duration::from_secs(3))
            .await
    );
    let sent = sequential(&h, 90).await;
    assert!(
        sent[0] < 20,
        "a returning replica takes a ramping share, not a full third: {sent:?}"
    );
    assert!(
        h.wait_for_state(target, "healthy", Duration::from_secs(5))
            .await
    );
    let transitions = |to| h.metric("apigate_backend_transitions_total", &[("to", to)]);
    assert_eq!(transitions("unready"), 1.0);
    assert_eq!(transitions("slow_start"), 1.0);
    assert!(h.metric("apigate_probes_total", &[("result", "not_ready")]) >= 3.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_announcing_its_shutdown_drains_after_one_probe_and_its_watch_continues() {
    let h = Harness::start_with(2, fast_health).await;
    let client = h.h2(None).await;
    let (mut watch, going) = open_watch(&h, &client).await;
    assert_eq!(watch.status, 200);
    let addr = h.replicas[going].local_addr();
    // --shutdown-delay-duration: /readyz fails with the shutdown check.
    h.replicas[going].set_condition(Condition::ShuttingDown);
    assert!(
        h.wait_for_state(addr, "draining", Duration::from_secs(3))
            .await
    );
    let report = &h.backends().await[&addr.to_string()];
    assert_eq!(report["drain_cause"], "shutdown", "{report}");
    assert_eq!(
        report["probe"]["failed"], 1,
        "one failed probe was enough: {report}"
    );
    assert_eq!(report["in_flight"]["long_running"], 1, "{report}");
    // The open watch keeps streaming from the draining replica...
    for _ in 0..3 {
        assert!(watch.next_chunk(Duration::from_secs(5)).await.is_some());
    }
    // ...while new requests go elsewhere.
    let sent = sequential(&h, 40).await;
    assert_eq!(sent[going], 0, "{sent:?}");
    assert_eq!(sent[1 - going], 40, "{sent:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_429_drains_its_replica_and_a_flow_control_429_drains_nothing() {
    let h = Harness::start_with(2, |config| {
        // Scheduled probes are rare: only the probe a 429 asks for explains a drain.
        config.gateway.spec.defaults.health = HealthSpec {
            interval: Some(secs(30)),
            ..HealthSpec::default()
        };
    })
    .await;
    let throttled = h.replicas[0].local_addr();
    let going = h.replicas[1].local_addr();
    // API Priority and Fairness rejects a flow: 429 + Retry-After, replica ready.
    h.replicas[0].set_condition(Condition::Throttling);
    let client = h.h2(None).await;
    let mut throttled_answers = 0;
    for _ in 0..30 {
        let r = client.get(PODS, &[]).await.unwrap();
        if r.status == 429 {
            assert!(r.headers.contains_key("retry-after"), "passed on as is");
            throttled_answers += 1;
        }
    }
    assert!(throttled_answers > 0);
    // The replica is asked and is ready: nothing drains.
    assert!(
        eventually(Duration::from_secs(3), || h.metric(
            "apigate_probes_total",
            &[("backend", &throttled.to_string()), ("result", "ok")]
        ) >= 1.0)
        .await
    );
    assert_eq!(h.backend_state(throttled).await, "healthy");

    // The other replica is past its shutdown delay: 429 + Retry-After (+ close).
    h.replicas[0].set_condition(Condition::Ready);
    h.replicas[1].set_condition(Condition::RetryAfterShutdown);
    for _ in 0..10 {
        client.get(PODS, &[]).await.unwrap();
    }
    assert!(
        h.wait_for_state(going, "draining", Duration::from_secs(3))
            .await
    );
    let sent = sequential(&h, 30).await;
    assert_eq!(sent[1], 0, "{sent:?}");
    assert_eq!(h.backend_state(throttled).await, "healthy");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_503s_from_an_unavailable_aggregated_api_ejects_nothing() {
    let pki = Arc::new(Pki::new());
    let mut options = pki.replica_options();
    options.unavailable_groups = vec!["metrics.k8s.io".into()];
    let replicas = apigate_fake_apiserver::spawn_many(3, "127.0.0.1".parse().unwrap(), options)
        .await
        .unwrap();
    let addrs: Vec<SocketAddr> = replicas.iter().map(Replica::local_addr).collect();
    let mut config = base_config("127.0.0.1".parse().unwrap(), &addrs);
    config.gateway.spec.defaults.ejection = EjectionSpec {
        consecutive_failures: Some(2),
        max_ejected_percent: Some(100),
        ..EjectionSpec::default()
    };
    let h = Harness::start_config(pki, replicas, config).await;
    let client = h.h2(None).await;
    let counts = client
        .spread(
            "/apis/metrics.k8s.io/v1beta1/nodes",
            &[],
            REPLICA_HEADER,
            150,
            10,
        )
        .await
        .unwrap();
    assert_eq!(counts.len(), 3, "every replica answered: {counts:?}");
    // A request is counted when its stream has finished, which may be just after the
    // client read the answer: wait for the last one.
    eventually(Duration::from_secs(2), || {
        h.metrics().sum(
            "apigate_requests_total",
            &[("route", ROUTE), ("code", "503")],
        ) >= 150.0
    })
    .await;
    let m = h.metrics();
    assert_eq!(
        m.sum(
            "apigate_requests_total",
            &[("route", ROUTE), ("code", "503")]
        ),
        150.0
    );
    assert_eq!(m.sum("apigate_backend_ejections_total", &[]), 0.0);
    for addr in &addrs {
        assert_eq!(h.backend_state(*addr).await, "healthy");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_replaced_under_a_new_address_gets_its_even_share_within_seconds() {
    let mut h = Harness::start_with(3, |config| {
        config.gateway.spec.defaults.slow_start = SlowStartSpec {
            window: Some(secs(1)),
            min_weight_percent: None,
        };
    })
    .await;
    // A long history on the old replicas.
    sequential(&h, 600).await;
    // Replica 2 is replaced by a new one at a new address.
    let old = h.replicas.remove(2);
    old.shutdown().await;
    let new = apigate_fake_apiserver::spawn(
        "127.0.0.1:0".parse().unwrap(),
        apigate_fake_apiserver::ReplicaOptions {
            id: "replica-new".into(),
            ..h.pki.replica_options()
        },
    )
    .await
    .unwrap();
    let addrs = [
        h.replicas[0].local_addr(),
        h.replicas[1].local_addr(),
        new.local_addr(),
    ];
    h.replicas.push(new);
    let mut config = h.config.clone();
    config.routes[0].spec.backends.static_addresses =
        addrs.iter().map(ToString::to_string).collect();
    h.reload(config).await;
    assert_eq!(h.backend_state(addrs[2]).await, "slow_start");
    // Traffic goes on through the ramp...
    let ramp_end = tokio::time::Instant::now() + Duration::from_millis(1200);
    while tokio::time::Instant::now() < ramp_end {
        sequential(&h, 20).await;
    }
    // ...after which the newcomer takes a third, not the two thirds a lifetime count
    // would give it until it caught up.
    let sent = sequential(&h, 300).await;
    assert!((80..=120).contains(&sent[2]), "{sent:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_ejection_one_request_or_one_probe_decides() {
    for probing in [false, true] {
        let pki = Arc::new(Pki::new());
        let up = apigate_fake_apiserver::spawn_many(
            1,
            "127.0.0.1".parse().unwrap(),
            pki.replica_options(),
        )
        .await
        .unwrap();
        // The second replica is down: its address refuses connections.
        let down = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let mut config = base_config("127.0.0.1".parse().unwrap(), &[up[0].local_addr(), down]);
        let defaults = &mut config.gateway.spec.defaults;
        defaults.ejection = EjectionSpec {
            consecutive_failures: Some(1),
            base_ejection_time: Some(millis(500)),
            ..EjectionSpec::default()
        };
        defaults.health = HealthSpec {
            enabled: Some(probing),
            interval: Some(millis(200)),
            timeout: Some(millis(100)),
            healthy_threshold: Some(1),
            ..HealthSpec::default()
        };
        let mut h = Harness::start_config(pki, up, config).await;
        // Requests find the replica down (and retry on the other): ejected.
        sequential(&h, 4).await;
        assert!(
            h.wait_for_state(down, "ejected", Duration::from_secs(2))
                .await
                || h.backend_state(down).await == "probation",
            "{probing}"
        );
        // It comes back at the same address.
        let back = apigate_fake_apiserver::spawn(
            down,
            apigate_fake_apiserver::ReplicaOptions {
                id: "replica-back".into(),
                ..h.pki.replica_options()
            },
        )
        .await
        .unwrap();
        h.replicas.push(back);
        if probing {
            // No traffic at all: a probe decides.
            assert!(
                h.wait_for_state(down, "slow_start", Duration::from_secs(3))
                    .await,
                "a passed probe ends probation"
            );
        } else {
            assert!(
                h.wait_for_state(down, "probation", Duration::from_secs(2))
                    .await
            );
            // The next requests: one of them is the trial, and it passes.
            let mut trial_passed = false;
            for _ in 0..50 {
                sequential(&h, 1).await;
                if h.backend_state(down).await == "slow_start" {
                    trial_passed = true;
                    break;
                }
            }
            assert!(trial_passed, "a successful trial request ends probation");
            assert!(h.replicas[1].requests_total() >= 1);
        }
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_refused_for_its_identity_is_reported_and_never_takes_a_replica_out() {
    let pki = Arc::new(Pki::new());
    let replicas = refusing_anonymous(&pki, 2).await;
    let addrs: Vec<SocketAddr> = replicas.iter().map(Replica::local_addr).collect();
    let mut config = base_config("127.0.0.1".parse().unwrap(), &addrs);
    fast_health(&mut config);
    let mut h = Harness::start_config(pki, replicas, config.clone()).await;
    let label = addrs[0].to_string();
    assert!(
        eventually(Duration::from_secs(3), || h.metric(
            "apigate_probes_total",
            &[("backend", &label), ("result", "unauthorized")]
        ) >= 3.0)
        .await
    );
    let report = &h.backends().await[&label];
    assert_eq!(report["state"], "healthy", "{report}");
    assert_eq!(report["probe"]["misconfigured"], true, "{report}");
    let text = h.admin_get("/backends?format=text").await;
    assert!(text.contains("refused"), "{text}");
    // Clients with their own token are served throughout.
    let client = h.h2(None).await;
    let auth = format!("Bearer {TOKEN}");
    let counts = client
        .spread(PODS, &[("authorization", &auth)], REPLICA_HEADER, 20, 2)
        .await
        .unwrap();
    assert_eq!(counts.values().sum::<usize>(), 20, "{counts:?}");
    assert!(
        !counts.keys().any(|k| k.starts_with("(status")),
        "{counts:?}"
    );

    // With a health-check token the probes pass; so they do as a front-proxy user.
    std::fs::write(h.dir.path().join("probe-token"), TOKEN).unwrap();
    for identity in ["token", "front_proxy"] {
        let mut config = config.clone();
        let health = config.routes[0]
            .spec
            .health
            .get_or_insert_with(HealthSpec::default);
        match identity {
            "token" => health.token_file = Some("probe-token".into()),
            _ => health.front_proxy_user = Some("system:apigate-probe".into()),
        }
        let ok = |h: &Harness| {
            h.metric(
                "apigate_probes_total",
                &[("backend", &label), ("result", "ok")],
            )
        };
        let before = ok(&h);
        h.reload(config).await;
        assert!(
            eventually(Duration::from_secs(3), || ok(&h) >= before + 2.0).await,
            "{identity}"
        );
        let report = &h.backends().await[&label];
        assert_eq!(
            report["probe"]["misconfigured"], false,
            "{identity}: {report}"
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_probe_token_is_rejected_and_the_last_good_probe_keeps_running() {
    let pki = Arc::new(Pki::new());
    let replicas = refusing_anonymous(&pki, 1).await;
    let addr = replicas[0].local_addr();
    let mut config = base_config("127.0.0.1".parse().unwrap(), &[addr]);
    fast_health(&mut config);
    config.routes[0].spec.health = Some(HealthSpec {
        token_file: Some("probe-token".into()),
        ..HealthSpec::default()
    });
    let dir_token = |h: &Harness| h.dir.path().join("probe-token");
    let h =
        Harness::start_config_with_files(pki, replicas, config, &[("probe-token", TOKEN)]).await;
    let label = addr.to_string();
    let ok = |h: &Harness| {
        h.metric(
            "apigate_probes_total",
            &[("backend", &label), ("result", "ok")],
        )
    };
    assert!(eventually(Duration::from_secs(3), || ok(&h) >= 2.0).await);
    std::fs::write(dir_token(&h), "").unwrap();
    assert!(
        eventually(Duration::from_secs(5), || h
            .metric("apigate_config_reloads_total", &[("result", "failure")])
            >= 1.0)
        .await,
        "the emptied token file was seen and rejected"
    );
    assert_eq!(h.metric("apigate_config_revision", &[]), 1.0);
    let before = ok(&h);
    assert!(
        eventually(Duration::from_secs(3), || ok(&h) >= before + 2.0).await,
        "the prober keeps the last good token"
    );
    assert_eq!(h.backend_state(addr).await, "healthy");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminating_endpoint_drains_visibly_with_its_watch_and_serves_again_when_ready() {
    let h = Harness::start_with(2, fast_health).await;
    let client = h.h2(None).await;
    let (mut watch, going) = open_watch(&h, &client).await;
    let addr = h.replicas[going].local_addr();
    // What the Kubernetes source hands over when the endpoint turns terminating: the
    // address moves from the route's backends to its draining list.
    let mut snapshot = h.compile();
    let route = std::sync::Arc::get_mut(&mut snapshot.routes[0]).unwrap();
    route.backends.retain(|b| *b != addr);
    route.draining = vec![addr];
    h.running().state.install(snapshot);
    let report = &h.backends().await[&addr.to_string()];
    assert_eq!(report["state"], "draining", "{report}");
    assert_eq!(report["drain_cause"], "terminating", "{report}");
    assert_eq!(report["in_flight"]["long_running"], 1, "{report}");
    assert_eq!(
        report["routes"][0],
        format!("{ROUTE} (draining)"),
        "{report}"
    );
    assert_eq!(
        h.metric(
            "apigate_backend_state",
            &[("backend", &addr.to_string()), ("state", "draining")]
        ),
        1.0
    );
    let sent = sequential(&h, 20).await;
    assert_eq!(sent[going], 0, "{sent:?}");
    assert!(watch.next_chunk(Duration::from_secs(5)).await.is_some());
    // The pod is gone from the slice; its watch still runs, so it stays listed.
    let mut snapshot = h.compile();
    let route = std::sync::Arc::get_mut(&mut snapshot.routes[0]).unwrap();
    route.backends.retain(|b| *b != addr);
    h.running().state.install(snapshot);
    let report = &h.backends().await[&addr.to_string()];
    assert_eq!(report["state"], "draining", "{report}");
    assert_eq!(report["routes"].as_array().unwrap().len(), 0, "{report}");
    // Its last long-running request ends: it is gone.
    drop(watch);
    let mut gone = false;
    for _ in 0..100 {
        if h.backend_state(addr).await == "absent" {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        gone,
        "listed until its last request ended, not after: {:?}",
        h.backends().await.get(&addr.to_string())
    );
    // Back in the slice (a new pod at the old address): it ramps up.
    h.running().state.install(h.compile());
    assert_eq!(h.backend_state(addr).await, "slow_start");
    h.stop().await;
}
