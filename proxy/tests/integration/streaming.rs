//! Long-running requests: watches stream unbuffered; SPDY and WebSocket upgrades pass.

use std::time::Duration;

use apigate_fake_apiserver::REPLICA_HEADER;
use tokio::io::AsyncReadExt;

use crate::support::{read_head, write_all, Harness, TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_events_arrive_one_by_one_while_other_requests_flow() {
    let h = Harness::start(3).await;
    let client = h.h2(Some(&h.pki.alice)).await;
    let mut watch = client
        .stream("/api/v1/namespaces/default/pods?watch=true", &[])
        .await
        .unwrap();
    for _ in 0..3 {
        let chunk = watch.next_chunk(Duration::from_secs(5)).await.unwrap();
        assert!(chunk.contains("\"type\""), "{chunk}");
        // Ordinary requests on the same connection keep flowing and keep spreading.
        let counts = client
            .spread("/version", &[], REPLICA_HEADER, 30, 3)
            .await
            .unwrap();
        assert_eq!(counts.len(), 3, "{counts:?}");
    }
    let open: u64 = h.replicas.iter().map(|r| r.open_watches()).sum();
    assert_eq!(open, 1);
    let long_running: f64 = h
        .metrics()
        .lines()
        .filter(|l| {
            l.starts_with("apigate_requests_in_flight{") && l.contains("kind=\"long_running\"")
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum();
    assert_eq!(long_running, 1.0, "the watch is counted apart");
    h.stop().await;
}

async fn upgrade(h: &Harness, upgrade: &str, extra: &str) {
    upgrade_with_pause(h, upgrade, extra, Duration::ZERO).await;
}

async fn upgrade_with_pause(h: &Harness, upgrade: &str, extra: &str, pause: Duration) {
    let mut stream = h.h1_stream(None).await;
    let request = format!(
        "POST /api/v1/namespaces/default/pods/p/exec?command=sh HTTP/1.1\r\nHost: api.test.local\r\nAuthorization: Bearer {TOKEN}\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\n{extra}\r\n"
    );
    write_all(&mut stream, request.as_bytes()).await;
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{upgrade}: {head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("upgrade: {}", upgrade.to_ascii_lowercase())),
        "{head}"
    );
    // Bytes flow both ways through the upgraded stream, also after a quiet spell.
    for message in [&b"hello"[..], b"kubectl exec bytes \x00\x01\x02"] {
        tokio::time::sleep(pause).await;
        write_all(&mut stream, message).await;
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spdy_upgrade_passes_through() {
    let h = Harness::start(1).await;
    upgrade(
        &h,
        "SPDY/3.1",
        "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n",
    )
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through() {
    let h = Harness::start(1).await;
    upgrade(
        &h,
        "websocket",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n",
    )
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_exec_session_outlives_the_ordinary_request_timeout() {
    let settings = crate::support::Settings {
        defaults: "    requestTimeout: 300ms\n    longRunningTimeout: 1h".into(),
        ..crate::support::Settings::default()
    };
    let h = Harness::start_with(1, settings).await;
    // Quiet for longer than requestTimeout on both sides: must not be cut.
    upgrade_with_pause(&h, "SPDY/3.1", "", Duration::from_millis(800)).await;
    h.stop().await;
}
