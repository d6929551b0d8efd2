//! Backend failures under the forwarding core's one rule: what is retried where, what
//! counts against a replica (and ejects it), and what never does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use apigate_control::model::{Balancing, EjectionSpec};
use apigate_fake_apiserver::REPLICA_HEADER;
use apigate_test_support::config::{millis, secs};
use bytes::Bytes;

use crate::support::misbehaving::{Misbehaving, Refusal};
use crate::support::{base_config, slow_replicas, status, Harness, Pki, ROUTE};

/// An address nothing listens on (bound, then released).
fn dead_address() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn ejection(consecutive: u32, base_secs: u64) -> EjectionSpec {
    EjectionSpec {
        consecutive_failures: Some(consecutive),
        base_ejection_time: Some(secs(base_secs)),
        max_ejection_time: None,
        max_ejected_percent: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_retried_on_another_backend_then_ejected() {
    let pki = Arc::new(Pki::new());
    let replicas =
        apigate_fake_apiserver::spawn_many(1, "127.0.0.1".parse().unwrap(), pki.replica_options())
            .await
            .unwrap();
    let dead = dead_address();
    let mut config = base_config(
        "127.0.0.1".parse().unwrap(),
        &[dead, replicas[0].local_addr()],
    );
    config.gateway.spec.defaults.ejection = ejection(2, 30);
    let h = Harness::start_config(pki, replicas, config).await;
    let client = h.h2(None).await;
    // No request fails: nothing was sent to the dead backend, so retrying is safe.
    let counts = client
        .spread(
            "/api/v1/namespaces/default/pods",
            &[],
            REPLICA_HEADER,
            40,
            1,
        )
        .await
        .unwrap();
    assert_eq!(counts.get("replica-0"), Some(&40), "{counts:?}");
    let dead = dead.to_string();
    let m = h.metrics();
    // After two failures in a row the dead backend is ejected and no longer tried.
    assert_eq!(
        m.sum(
            "apigate_upstream_failures_total",
            &[("backend", &dead), ("failure", "connect")]
        ),
        2.0
    );
    assert_eq!(
        m.sum(
            "apigate_retries_total",
            &[("route", ROUTE), ("reason", "connect")]
        ),
        2.0
    );
    assert_eq!(
        m.sum("apigate_backend_ejections_total", &[("backend", &dead)]),
        1.0
    );
    assert_eq!(
        m.sum(
            "apigate_backend_state",
            &[("backend", &dead), ("state", "ejected")]
        ),
        1.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_down_gives_a_kube_status_and_panic_mode_keeps_trying() {
    let pki = Arc::new(Pki::new());
    let mut config = base_config(
        "127.0.0.1".parse().unwrap(),
        &[dead_address(), dead_address()],
    );
    config.gateway.spec.defaults.ejection = ejection(1, 30);
    // Let failures eject every replica (by default at most 10%, one, is ejected).
    config.gateway.spec.defaults.ejection.max_ejected_percent = Some(100);
    let h = Harness::start_config(pki, Vec::new(), config).await;
    let client = h.h2(None).await;
    for _ in 0..3 {
        let r = client.get("/api", &[]).await.unwrap();
        assert_eq!(r.status, 502);
        let status = status(&r.body);
        assert_eq!(status["code"], 502);
        assert!(
            status["message"].as_str().unwrap().contains(ROUTE),
            "{status}"
        );
    }
    // Both backends are ejected after the first request; later requests still try them.
    let m = h.metrics();
    assert!(m.sum("apigate_panic_mode_total", &[("route", ROUTE)]) >= 2.0);
    assert_eq!(
        m.sum(
            "apigate_rejections_total",
            &[("reason", "upstream_unavailable")]
        ),
        3.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_with_requests_in_flight_fails_no_request() {
    let pki = Arc::new(Pki::new());
    let replicas = slow_replicas(&pki, 3, Duration::from_millis(400)).await;
    let backends: Vec<SocketAddr> = replicas.iter().map(|r| r.local_addr()).collect();
    let mut h = Harness::start_config(
        pki,
        replicas,
        base_config("127.0.0.1".parse().unwrap(), &backends),
    )
    .await;
    let client = h.h2(Some(&h.pki.alice)).await;
    let load = {
        let client = client.clone();
        tokio::spawn(async move { client.spread("/api", &[], REPLICA_HEADER, 30, 30).await })
    };
    // Wait until the first replica holds requests, then stop it under them.
    let victim = h.replicas.remove(0);
    let start = tokio::time::Instant::now();
    while victim.requests_total() == 0 && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let in_flight = victim.requests_total();
    assert!(in_flight > 0, "the replica had requests in flight");
    let victim_id = victim.id().to_string();
    victim.shutdown().await;
    let counts = load.await.unwrap().unwrap();
    assert!(
        counts.keys().all(|k| k.starts_with("replica-")),
        "only proper answers: {counts:?}"
    );
    assert!(!counts.contains_key(&victim_id), "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 30);
    // The requests cut on the stopped replica were retried elsewhere (GET is idempotent).
    let m = h.metrics();
    assert!(m.sum("apigate_retries_total", &[("reason", "reset")]) >= 1.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_slower_than_the_request_timeout_gives_504_status() {
    let pki = Arc::new(Pki::new());
    let replicas = slow_replicas(&pki, 1, Duration::from_secs(3)).await;
    let mut config = base_config("127.0.0.1".parse().unwrap(), &[replicas[0].local_addr()]);
    config.gateway.spec.defaults.request_timeout = Some(millis(300));
    let h = Harness::start_config(pki, replicas, config).await;
    let client = h.h2(None).await;
    let started = std::time::Instant::now();
    let r = client
        .get("/api/v1/namespaces/default/pods", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "cut at the timeout, not after the reply"
    );
    assert_eq!(status(&r.body)["reason"], "Timeout");
    // apigate's own response-header timeout counts against the replica, once.
    let m = h.metrics();
    assert_eq!(
        m.sum(
            "apigate_upstream_failures_total",
            &[("failure", "response_timeout")]
        ),
        1.0
    );
    assert_eq!(
        m.sum("apigate_retries_total", &[]),
        0.0,
        "a timeout is not retried"
    );
    h.stop().await;
}

/// One misbehaving replica first in a round-robin route, a good one second: the first
/// attempt of the first request goes to the misbehaving one.
async fn behind(refusal: Refusal, consecutive: u32) -> (Harness, Misbehaving) {
    let pki = Arc::new(Pki::new());
    let bad = Misbehaving::start(&pki.replica_serving, refusal).await;
    let replicas =
        apigate_fake_apiserver::spawn_many(1, "127.0.0.1".parse().unwrap(), pki.replica_options())
            .await
            .unwrap();
    let mut config = base_config(
        "127.0.0.1".parse().unwrap(),
        &[bad.local_addr(), replicas[0].local_addr()],
    );
    config.routes[0].spec.balancing = Some(Balancing::RoundRobin);
    config.gateway.spec.defaults.ejection = ejection(consecutive, 30);
    (Harness::start_config(pki, replicas, config).await, bad)
}

async fn post(h: &Harness) -> apigate_test_support::client::Response {
    h.h2(None)
        .await
        .request(
            http::Method::POST,
            "/api/v1/namespaces/default/configmaps",
            &[("content-type", "application/json")],
            Bytes::from_static(
                br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#,
            ),
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_is_retried_elsewhere_even_for_a_post_and_blames_nobody() {
    let (h, bad) = behind(Refusal::Reset(h2::Reason::REFUSED_STREAM), 1).await;
    for _ in 0..4 {
        let r = post(&h).await;
        assert_eq!(
            r.headers[REPLICA_HEADER], "replica-0",
            "answered by the good replica"
        );
        assert!(r.status < 300, "{}", r.status);
    }
    assert!(bad.requests() >= 2, "the refusing replica was asked");
    let m = h.metrics();
    assert_eq!(
        m.sum("apigate_retries_total", &[("reason", "not_processed")]),
        bad.requests() as f64
    );
    assert_eq!(
        m.sum("apigate_backend_ejections_total", &[]),
        0.0,
        "refusals eject nobody"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_above_a_goaway_are_retried_elsewhere_even_for_a_post() {
    let (h, bad) = behind(Refusal::GoAway, 1).await;
    for _ in 0..4 {
        let r = post(&h).await;
        assert_eq!(r.headers[REPLICA_HEADER], "replica-0");
        assert!(r.status < 300, "{}", r.status);
    }
    assert!(bad.requests() >= 1);
    let m = h.metrics();
    assert!(m.sum("apigate_retries_total", &[("reason", "not_processed")]) >= 1.0);
    assert_eq!(m.sum("apigate_backend_ejections_total", &[]), 0.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_for_its_shape_is_not_retried_and_ejects_nobody() {
    let (h, bad) = behind(Refusal::Reset(h2::Reason::PROTOCOL_ERROR), 2).await;
    let client = h.h2(None).await;
    let mut refused = 0;
    for _ in 0..10 {
        let r = client.get("/api", &[]).await.unwrap();
        if r.status == 502 {
            refused += 1;
        } else {
            assert_eq!(r.headers[REPLICA_HEADER], "replica-0");
        }
    }
    assert_eq!(
        refused, 5,
        "every request that met the refusing replica failed, once"
    );
    assert_eq!(bad.requests(), 5, "and was not sent again");
    let m = h.metrics();
    assert_eq!(m.sum("apigate_retries_total", &[]), 0.0);
    assert_eq!(
        m.sum("apigate_upstream_failures_total", &[("failure", "refused")]),
        5.0
    );
    assert_eq!(
        m.sum("apigate_backend_ejections_total", &[]),
        0.0,
        "consecutiveFailures 2, never ejected"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicas_own_5xx_is_an_answer_not_a_failure() {
    let (h, bad) = behind(Refusal::Answer(503), 1).await;
    let client = h.h2(None).await;
    let mut codes = Vec::new();
    for _ in 0..10 {
        codes.push(client.get("/api", &[]).await.unwrap().status);
    }
    // Round robin keeps alternating: the 503-answering replica is never ejected.
    assert_eq!(codes.iter().filter(|c| **c == 503).count(), 5, "{codes:?}");
    assert_eq!(bad.requests(), 5);
    let m = h.metrics();
    assert_eq!(m.sum("apigate_backend_ejections_total", &[]), 0.0);
    assert_eq!(m.sum("apigate_upstream_failures_total", &[]), 0.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_replica_is_found_by_upstream_pings_and_its_watch_ends() {
    let pki = Arc::new(Pki::new());
    let hung = Misbehaving::start(&pki.replica_serving, Refusal::Freeze).await;
    let mut config = base_config("127.0.0.1".parse().unwrap(), &[hung.local_addr()]);
    config.gateway.spec.http2.upstream_ping_interval = Some(secs(1));
    // Only the PINGs may find it: no probes, and a watch may be silent for 24 h.
    config.gateway.spec.defaults.health.enabled = Some(false);
    let h = Harness::start_config(pki, Vec::new(), config).await;
    let client = h.h2(None).await;
    let watch = client.get("/api/v1/namespaces/default/pods?watch=true", &[]);
    // A PING after 1 s, unanswered for pingora's 5 s: the connection is closed and the
    // request ends with apigate's answer (its only replica failed).
    let response = tokio::time::timeout(Duration::from_secs(20), watch)
        .await
        .expect("the watch on the hung replica ended")
        .unwrap();
    assert!([502, 503].contains(&response.status), "{}", response.status);
    assert_eq!(hung.requests(), 1);
    assert!(
        h.metrics()
            .sum("apigate_upstream_failures_total", &[("route", ROUTE)])
            >= 1.0
    );
    h.stop().await;
}
