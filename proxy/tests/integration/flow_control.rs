//! Flow control through real TLS, HTTP/1.1 and HTTP/2 clients: per-client token
//! buckets and watch limits answered with a 429 `Status` and `Retry-After` on a
//! connection that stays open, a route's cap shared fairly by clients in turn, and
//! exemptions only for verified certificate groups.

use std::sync::Arc;
use std::time::Duration;

use apigate_control::model::{FlowControlSpec, FlowMatchSpec, FlowPolicySpec};
use apigate_test_support::client::H2Client;

use crate::support::{read_body, read_head, write_all, Harness, Pki, HOST, ROUTE, TOKEN};

fn lists_per_client(qps: f64, burst: u32) -> FlowPolicySpec {
    FlowPolicySpec {
        name: "lists".into(),
        matches: FlowMatchSpec {
            verbs: vec!["list".into()],
            ..FlowMatchSpec::default()
        },
        qps: Some(qps),
        burst: Some(burst),
        ..FlowPolicySpec::default()
    }
}

async fn h1_get(
    stream: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
    path: &str,
    token: bool,
) -> (String, Vec<u8>) {
    let auth = if token {
        format!("Authorization: Bearer {TOKEN}\r\n")
    } else {
        String::new()
    };
    write_all(
        stream,
        format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{auth}\r\n").as_bytes(),
    )
    .await;
    let head = read_head(stream).await;
    let body = read_body(stream, &head).await;
    (head, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_gets_429_with_retry_after_and_keeps_its_connection() {
    let h = Harness::start_with(1, |c| {
        c.gateway.spec.defaults.flow_control = Some(FlowControlSpec {
            policies: vec![lists_per_client(0.5, 3)],
            ..FlowControlSpec::default()
        });
    })
    .await;
    // A token client lists in a loop on one HTTP/1.1 connection.
    let mut bob = h.h1_stream(None).await;
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..6 {
        let (head, body) = h1_get(&mut bob, "/api/v1/namespaces/default/pods", true).await;
        statuses.push(head.split(' ').nth(1).unwrap_or_default().to_string());
        if head.starts_with("HTTP/1.1 429") {
            refused = Some((head, body));
        }
    }
    assert_eq!(statuses, ["200", "200", "200", "429", "429", "429"]);
    let (head, body) = refused.unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.contains("\r\nretry-after: 2\r\n"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    let status = crate::support::status(&body);
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(status["code"], 429);
    assert_eq!(status["details"]["retryAfterSeconds"], 2);
    assert!(
        status["message"].as_str().unwrap().contains("lists"),
        "{status}"
    );
    // The same connection still serves what the policy does not limit.
    let (head, _) = h1_get(&mut bob, "/api/v1/namespaces/default/pods/p", true).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // Another client's bucket is its own: a certificate user, and an anonymous client.
    let alice = h.h2(Some(&h.pki.alice)).await;
    let anonymous = h.h2(None).await;
    for client in [&alice, &anonymous] {
        for _ in 0..3 {
            let r = client
                .get("/api/v1/namespaces/default/pods", &[])
                .await
                .unwrap();
            assert_eq!(r.status, 200);
        }
    }
    let m = h.metrics();
    assert_eq!(
        m.sum(
            "apigate_flow_control_rejected_total",
            &[("route", ROUTE), ("policy", "lists"), ("reason", "rate")]
        ),
        3.0
    );
    assert_eq!(
        m.sum(
            "apigate_apiserver_request_total",
            &[("verb", "LIST"), ("code", "429")]
        ),
        3.0
    );
    // A throttled request is the client's, never the replica's.
    assert_eq!(m.sum("apigate_upstream_failures_total", &[]), 0.0);
    // The busiest client's share of the route's requests, by rank only: the token
    // client sent 7 of 13 (refused ones included), the others 3 each.
    let share = |rank| {
        m.sum(
            "apigate_flow_control_top_client_share",
            &[("route", ROUTE), ("rank", rank)],
        )
    };
    assert!((share("1") - 7.0 / 13.0).abs() < 0.02, "{}", share("1"));
    assert!((share("2") - 3.0 / 13.0).abs() < 0.02, "{}", share("2"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_may_hold_only_its_watch_limit_and_masters_are_exempt() {
    let h = Harness::start_with(1, |c| {
        c.gateway.spec.defaults.flow_control = Some(FlowControlSpec {
            policies: vec![FlowPolicySpec {
                name: "watches".into(),
                max_watches: Some(2),
                ..FlowPolicySpec::default()
            }],
            ..FlowControlSpec::default()
        });
    })
    .await;
    let alice = h.h2(Some(&h.pki.alice)).await;
    let path = "/api/v1/namespaces/default/pods?watch=1";
    let first = alice.stream(path, &[]).await.unwrap();
    let second = alice.stream(path, &[]).await.unwrap();
    assert_eq!((first.status, second.status), (200, 200));
    let third = alice.get(path, &[]).await.unwrap();
    assert_eq!(third.status, 429);
    assert_eq!(
        crate::support::status(&third.body)["details"]["retryAfterSeconds"],
        5
    );
    // Another client has its own two.
    let anonymous = h.h2(None).await;
    let other = anonymous.stream(path, &[]).await.unwrap();
    assert_eq!(other.status, 200);
    assert_eq!(
        h.metrics().sum(
            "apigate_flow_control_rejected_total",
            &[("policy", "watches"), ("reason", "watches")]
        ),
        1.0
    );
    // A watch that ends gives its place back.
    drop(first);
    let mut again = 0;
    for _ in 0..50 {
        again = alice.stream(path, &[]).await.unwrap().status;
        if again == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(again, 200);
    // system:masters (from a verified certificate) is exempt by default.
    let admin = h
        .pki
        .client_ca
        .issue_client("admin", &["system:masters"])
        .unwrap();
    let admin = h.h2(Some(&admin)).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let watch = admin.stream(path, &[]).await.unwrap();
        assert_eq!(watch.status, 200);
        held.push(watch);
    }
    drop((second, other, held));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_at_its_cap_serves_waiting_clients_in_turn() {
    let pki = Arc::new(Pki::new());
    let replicas = crate::support::slow_replicas(&pki, 1, Duration::from_millis(100)).await;
    let backends: Vec<_> = replicas.iter().map(|r| r.local_addr()).collect();
    let mut config = crate::support::base_config("127.0.0.1".parse().unwrap(), &backends);
    config.gateway.spec.defaults.flow_control = Some(FlowControlSpec {
        max_in_flight: Some(1),
        max_queued: Some(11),
        queue_timeout: Some("30s".parse().unwrap()),
        ..FlowControlSpec::default()
    });
    let h = Harness::start_config(pki, replicas, config).await;
    let heavy = h.h2(Some(&h.pki.alice)).await;
    let light = h.h2(None).await;
    let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
    let send = |client: &H2Client, name: &'static str| {
        let (client, done) = (client.clone(), done.clone());
        tokio::spawn(async move {
            let r = client
                .get("/api/v1/namespaces/default/pods/p", &[])
                .await
                .unwrap();
            done.send((name, r.status)).unwrap();
        })
    };
    // The heavy client queues ten requests behind the one in flight...
    let mut tasks: Vec<_> = (0..11).map(|_| send(&heavy, "heavy")).collect();
    let queued = crate::support::eventually(Duration::from_secs(5), || {
        h.metrics().sum("apigate_flow_control_queued", &[]) >= 10.0
    })
    .await;
    assert!(queued, "the heavy client's requests wait");
    // ...then the light client sends one, and two more over the cap are refused.
    tasks.push(send(&light, "light"));
    tokio::time::sleep(Duration::from_millis(20)).await;
    for _ in 0..2 {
        tasks.push(send(&heavy, "over"));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut order = Vec::new();
    while let Ok(entry) = finished.try_recv() {
        order.push(entry);
    }
    let refused: Vec<_> = order.iter().filter(|(_, status)| *status == 429).collect();
    assert_eq!(refused.len(), 2, "the queue holds 11: {order:?}");
    let served: Vec<&str> = order
        .iter()
        .filter(|(_, status)| *status == 200)
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(served.len(), 12, "{order:?}");
    // The light client's request went next in turn, not after the heavy one's ten.
    let light_at = served.iter().position(|n| *n == "light").unwrap();
    assert!(light_at <= 2, "served in turn: {served:?}");
    let m = h.metrics();
    assert_eq!(
        m.sum(
            "apigate_flow_control_rejected_total",
            &[("policy", "route"), ("reason", "queue_full")]
        ),
        2.0
    );
    assert!(m.sum("apigate_flow_control_wait_seconds_count", &[]) >= 10.0);
    h.stop().await;
}
