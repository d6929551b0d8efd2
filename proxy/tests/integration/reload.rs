//! Hot reload: a bad config never replaces a good one; a good one applies to the next
//! request without touching open streams; a reload during a connection's admission is
//! seen by it.

use std::time::Duration;

use apigate_control::model::ProxyProtocolMode;
use apigate_fake_apiserver::REPLICA_HEADER;
use apigate_test_support::client::H2Client;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::{allow_only, eventually, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_is_rejected_and_the_last_good_one_keeps_serving() {
    let h = Harness::start(2).await;
    let client = h.h2(None).await;
    assert_eq!(client.get("/version", &[]).await.unwrap().status, 200);
    let mut bad = h.config.clone();
    bad.routes[0]
        .spec
        .backends
        .static_addresses
        .insert(0, "not-an-address".into());
    std::fs::write(h.config_path(), bad.render()).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || h
            .metrics()
            .sum("apigate_config_reloads_total", &[("result", "failure")])
            >= 1.0)
        .await,
        "the bad config was seen and rejected"
    );
    let m = h.metrics();
    assert_eq!(
        m.sum("apigate_config_errors_total", &[("problem", "invalid")]),
        1.0
    );
    assert_eq!(m.sum("apigate_config_revision", &[]), 1.0);
    let counts = client
        .spread("/version", &[], REPLICA_HEADER, 20, 2)
        .await
        .unwrap();
    assert_eq!(
        counts.values().sum::<usize>(),
        20,
        "still served: {counts:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_backends_apply_to_the_next_request_and_open_watches_survive() {
    let mut h = Harness::start(2).await;
    let client = h.h2(None).await;
    let mut watch = client
        .stream("/api/v1/namespaces/default/pods?watch=true", &[])
        .await
        .unwrap();
    let first = watch.next_chunk(Duration::from_secs(5)).await.unwrap();
    assert!(first.contains("\"type\""), "{first}");

    // Swap to only the second replica.
    let mut only_second = h.config.clone();
    only_second.routes[0].spec.backends.static_addresses =
        vec![h.replicas[1].local_addr().to_string()];
    h.reload(only_second).await;
    let counts = client
        .spread("/version", &[], REPLICA_HEADER, 20, 2)
        .await
        .unwrap();
    assert_eq!(counts.get("replica-1"), Some(&20), "{counts:?}");
    // The watch opened before the swap still delivers events.
    for _ in 0..3 {
        let chunk = watch.next_chunk(Duration::from_secs(5)).await.unwrap();
        assert!(chunk.contains("\"type\""), "{chunk}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_during_admission_refuses_the_connection() {
    let mut h = Harness::start_with(1, |c| {
        let https = c.listener_mut("https").unwrap();
        https.proxy_protocol = ProxyProtocolMode::Optional;
        https.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;
    // A client starts its PROXY header and pauses (it may, for handshakeTimeout).
    let mut tcp = TcpStream::connect(h.addr()).await.unwrap();
    tcp.write_all(b"PROXY TCP4 192.0.2.7 127.0.0")
        .await
        .unwrap();
    tcp.flush().await.unwrap();
    // Meanwhile a reload revokes the client's address.
    let mut revoked = h.config.clone();
    allow_only(&mut revoked, &["198.51.100.0/24"]);
    h.reload(revoked).await;
    // The client finishes; the configuration it was accepted under allowed it, the one
    // now active does not.
    tcp.write_all(b".1 5000 443\r\n").await.unwrap();
    let result = H2Client::over(tcp, &h.tls(None)).await;
    let served = match result {
        Ok(client) => client.get("/version", &[]).await.is_ok(),
        Err(_) => false,
    };
    assert!(!served, "the revoked client was refused");
    assert_eq!(h.replicas[0].requests_total(), 0);
    let m = h.metrics();
    assert_eq!(
        m.sum("apigate_connections_total", &[("result", "revoked")]),
        1.0
    );
    assert_eq!(
        m.sum(
            "apigate_connections_revoked_total",
            &[("reason", "acl_revoked")]
        ),
        1.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_from_the_kubernetes_source_is_counted_like_a_bad_file() {
    use apigate_control::source::kubernetes::Report;
    use apigate_control::{ConfigError, ObjectRef, Problem};
    let h = Harness::start(1).await;
    let running = h.running.as_ref().unwrap();
    let report = apigate::kubernetes::installer(
        running.rollout.clone().expect("a rollout controller"),
        Some(running.readiness.clone()),
    );
    let object = ObjectRef::Named {
        kind: "GatewayConfig".into(),
        namespace: String::new(),
        name: "gw".into(),
    };
    report(Report::Rejected(vec![ConfigError::new(
        object,
        "spec.defaults.timeouts.connect",
        Problem::Missing("a duration"),
    )]));
    let m = h.metrics();
    assert_eq!(
        m.sum("apigate_config_reloads_total", &[("result", "failure")]),
        1.0
    );
    assert_eq!(
        m.sum("apigate_config_errors_total", &[("problem", "missing")]),
        1.0,
        "the same error counter as a rejected file"
    );
    assert_eq!(m.sum("apigate_config_revision", &[]), 1.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_hostname_closes_the_connections_it_routed_and_only_those() {
    use apigate_test_support::client::ClientTls;
    let mut h = Harness::start_with(1, |c| {
        c.routes[0]
            .spec
            .hostnames
            .push(crate::support::OTHER_HOST.into());
    })
    .await;
    let kept = h.h2(None).await;
    let other_tls = ClientTls {
        server_name: crate::support::OTHER_HOST.into(),
        ..h.tls(None)
    };
    let dropped = H2Client::connect(h.addr(), &other_tls).await.unwrap();
    assert_eq!(dropped.get("/version", &[]).await.unwrap().status, 200);

    let mut narrowed = h.config.clone();
    narrowed.routes[0].spec.hostnames = vec![crate::support::HOST.into()];
    h.reload(narrowed).await;
    assert!(
        dropped.get("/version", &[]).await.is_err(),
        "the connection routed by the removed name is closed"
    );
    assert_eq!(kept.get("/version", &[]).await.unwrap().status, 200);
    assert_eq!(
        h.metric(
            "apigate_connections_revoked_total",
            &[("reason", "name_removed")]
        ),
        1.0
    );
    assert!(
        H2Client::connect(h.addr(), &other_tls).await.is_err(),
        "the removed name routes nothing new"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_client_ca_closes_the_connections_it_authenticated() {
    use apigate_test_support::config::files;
    let h = Harness::start(1).await;
    let alice = h.h2(Some(&h.pki.alice)).await;
    let anonymous = h.h2(None).await;
    assert_eq!(alice.get("/version", &[]).await.unwrap().status, 200);
    assert_eq!(anonymous.get("/version", &[]).await.unwrap().status, 200);

    // The client CA bundle is replaced by one without the CA that signed alice's
    // certificate (a rotation that drops it): new handshakes and open connections.
    let before = h.metrics().sum("apigate_config_revision", &[]);
    std::fs::write(
        h.dir.path().join(files::CLIENT_CA),
        h.pki.server_ca.cert_pem(),
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || h
            .metrics()
            .sum("apigate_config_revision", &[])
            > before)
        .await
    );
    assert!(
        alice.get("/version", &[]).await.is_err(),
        "the connection its removed CA authenticated is closed"
    );
    assert_eq!(
        anonymous.get("/version", &[]).await.unwrap().status,
        200,
        "a connection without a client certificate is not touched"
    );
    assert_eq!(
        h.metric(
            "apigate_connections_revoked_total",
            &[("reason", "client_ca_removed")]
        ),
        1.0
    );
    h.stop().await;
}

/// Issue-15's "reloads under load", in the suite: 100 configurations, each activated,
/// adding and removing routes and switching another route terminate → passthrough →
/// terminate, while clients use the route that stays. Not one of their requests,
/// connections or watch events is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_reloads_under_load_fail_nothing_on_the_route_that_stays() {
    use apigate_control::model::RouteMode;
    use apigate_test_support::config::route;

    use crate::support::OTHER_HOST;

    const RELOADS: usize = 100;
    let mut h = Harness::start(2).await;
    let backends: Vec<_> = h.replicas.iter().map(|r| r.local_addr()).collect();
    h.config.routes.push(route::terminate(
        "other",
        "garden-other",
        &[OTHER_HOST],
        &backends,
    ));
    let first = h.config.clone();
    h.reload(first).await;

    let load = crate::support::load::Load::start(&h, None).await;
    let watcher = h.h2(None).await;
    let mut watch = watcher
        .stream("/api/v1/namespaces/default/pods?watch=true", &[])
        .await
        .unwrap();

    let mut config = h.config.clone();
    let mut modes = Vec::new();
    let mut switched = None;
    for i in 0..RELOADS {
        // Add a route, then remove it with the next configuration.
        if i % 2 == 0 {
            let host = format!("extra-{i}.test.local");
            let extra =
                route::terminate(&format!("extra-{i}"), "garden-extra", &[&host], &backends);
            config.routes.push(extra);
        } else {
            config
                .routes
                .retain(|r| !r.metadata.name.starts_with("extra-"));
        }
        // Every 10th: switch the other route between the modes.
        if i % 10 == 5 {
            let other = config.route_mut("other").unwrap();
            other.spec = if other.spec.mode == RouteMode::Terminate {
                route::passthrough("other", "garden-other", &[OTHER_HOST], &backends).spec
            } else {
                route::terminate("other", "garden-other", &[OTHER_HOST], &backends).spec
            };
            switched = Some(other.spec.mode);
        }
        h.reload(config.clone()).await;
        // The switch is what apigate now runs.
        if let Some(mode) = switched.take() {
            let active = h.running().state.load();
            let route = active.snapshot.route_for_sni(OTHER_HOST).unwrap();
            assert_eq!(route.mode.kind(), mode, "reload {i} switched the route");
            modes.push(mode);
        }
        // The watch opened before the first reload still delivers.
        assert!(
            watch.next_chunk(Duration::from_secs(5)).await.is_some(),
            "the watch stopped after reload {i}"
        );
    }
    let (served, failures) = load.stop().await;
    assert!(
        modes.contains(&RouteMode::Passthrough) && modes.contains(&RouteMode::Terminate),
        "apigate ran the route in both modes: {modes:?}"
    );
    assert_eq!(
        h.metrics().sum("apigate_config_revision", &[]),
        (RELOADS + 2) as f64,
        "every configuration was activated"
    );
    assert!(
        failures.is_empty(),
        "{} failed of {served}: {failures:?}",
        failures.len()
    );
    assert!(served > 1_000, "the load ran throughout: {served} requests");
    // The switched route serves again after its last switch back to terminate.
    let other = H2Client::connect(
        h.addr(),
        &apigate_test_support::client::ClientTls {
            server_name: OTHER_HOST.into(),
            ..h.tls(None)
        },
    )
    .await
    .unwrap();
    assert_eq!(other.get("/version", &[]).await.unwrap().status, 200);
    h.stop().await;
}
