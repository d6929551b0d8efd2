//! Backend failures: retry on connect failure, ejection, panic mode, Status bodies.

use std::net::SocketAddr;
use std::sync::Arc;

use apigate_fake_apiserver::REPLICA_HEADER;

use crate::support::{Harness, Pki, Settings};

/// An address nothing listens on (bound, then released).
fn dead_address() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_retried_on_another_backend_then_ejected() {
    let pki = Arc::new(Pki::new());
    let replicas =
        apigate_fake_apiserver::spawn_many(1, "127.0.0.1".parse().unwrap(), pki.replica_options())
            .await
            .unwrap();
    let dead = dead_address();
    let backends = vec![dead, replicas[0].local_addr()];
    let settings = Settings {
        defaults: "    ejection: {consecutiveFailures: 2, baseEjectionTime: 30s}".into(),
        ..Settings::default()
    };
    let h = Harness::start_backends(pki, replicas, &backends, settings).await;
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
    let errors = format!(
        "apigate_upstream_connect_errors_total{{backend=\"{dead}\",route=\"garden-test/shoot\"}}"
    );
    // After two failures in a row the dead backend is ejected and no longer tried.
    assert_eq!(h.metric(&errors), 2.0, "{}", h.metrics());
    assert_eq!(
        h.metric(&format!(
            "apigate_backend_ejections_total{{backend=\"{dead}\"}}"
        )),
        1.0
    );
    assert_eq!(
        h.metric(&format!("apigate_backend_ejected{{backend=\"{dead}\"}}")),
        1.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_down_gives_a_kube_status_and_panic_mode_keeps_trying() {
    let pki = Arc::new(Pki::new());
    let backends = vec![dead_address(), dead_address()];
    let settings = Settings {
        defaults: "    ejection: {consecutiveFailures: 1, baseEjectionTime: 30s}".into(),
        ..Settings::default()
    };
    let h = Harness::start_backends(pki, Vec::new(), &backends, settings).await;
    let client = h.h2(None).await;
    for _ in 0..3 {
        let r = client.get("/api", &[]).await.unwrap();
        assert_eq!(r.status, 502);
        let status: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["code"], 502);
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("garden-test/shoot"),
            "{status}"
        );
    }
    // Both backends are ejected after the first request; later requests still try them.
    assert!(
        h.metric("apigate_panic_mode_total{route=\"garden-test/shoot\"}") >= 2.0,
        "{}",
        h.metrics()
    );
    assert_eq!(
        h.metric("apigate_rejections_total{reason=\"upstream_unavailable\"}"),
        3.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_mid_run_fails_no_request() {
    let h = Harness::start(3).await;
    let client = h.h2(Some(&h.pki.alice)).await;
    let mut h = h;
    let first = client
        .spread("/api", &[], REPLICA_HEADER, 30, 3)
        .await
        .unwrap();
    assert_eq!(first.len(), 3);
    let stopped = h.replicas.remove(0);
    let stopped_id = stopped.id().to_string();
    stopped.shutdown().await;
    let after = client
        .spread("/api", &[], REPLICA_HEADER, 60, 3)
        .await
        .unwrap();
    assert!(
        after.keys().all(|k| k.starts_with("replica-")),
        "only proper answers: {after:?}"
    );
    assert!(!after.contains_key(&stopped_id));
    assert_eq!(after.values().sum::<usize>(), 60);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_slower_than_the_request_timeout_gives_504_status() {
    let pki = Arc::new(Pki::new());
    let mut options = pki.replica_options();
    options.service_time =
        apigate_fake_apiserver::ServiceTime::Fixed(std::time::Duration::from_secs(3));
    let replicas = apigate_fake_apiserver::spawn_many(1, "127.0.0.1".parse().unwrap(), options)
        .await
        .unwrap();
    let backends = vec![replicas[0].local_addr()];
    let settings = Settings {
        defaults: "    requestTimeout: 300ms".into(),
        ..Settings::default()
    };
    let h = Harness::start_backends(pki, replicas, &backends, settings).await;
    let client = h.h2(None).await;
    let started = std::time::Instant::now();
    let r = client
        .get("/api/v1/namespaces/default/pods", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 504);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "cut at the timeout, not after the reply"
    );
    let status: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(status["reason"], "Timeout");
    h.stop().await;
}
