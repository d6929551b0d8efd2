//! Malformed connections are closed within a bounded time, counted, and never forwarded.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{eventually, Harness, Settings};

/// Read until EOF or error; true if the server closed the connection within `limit`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let end = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(end, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_and_garbage_on_the_tls_port_are_closed_and_counted() {
    let h = Harness::start(1).await;
    for payload in [
        &b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"\x16\x03\x01\xff\xffgarbage",
        &[0u8; 64],
    ] {
        let mut tcp = TcpStream::connect(h.addr()).await.unwrap();
        tcp.write_all(payload).await.unwrap();
        assert!(closed_within(&mut tcp, Duration::from_secs(5)).await);
    }
    assert!(
        eventually(Duration::from_secs(2), || h.metric(
            "apigate_connections_total{listener=\"https\",result=\"not_tls\"}"
        ) == 3.0)
        .await,
        "{}",
        h.metrics()
    );
    assert_eq!(h.replicas[0].requests_total(), 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_missing_sni_is_refused_before_any_certificate() {
    let h = Harness::start(1).await;
    let mut tls = h.tls(None);
    tls.server_name = "other.test.local".into();
    assert!(apigate::demo::client::H2Client::connect(h.addr(), &tls)
        .await
        .is_err());
    tls.server_name = "127.0.0.1".into(); // an IP address: clients send no SNI
    assert!(apigate::demo::client::H2Client::connect(h.addr(), &tls)
        .await
        .is_err());
    assert_eq!(
        h.metric("apigate_connections_total{listener=\"https\",result=\"unknown_sni\"}"),
        1.0
    );
    assert_eq!(
        h.metric("apigate_connections_total{listener=\"https\",result=\"no_sni\"}"),
        1.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_at_the_handshake_and_header_deadlines() {
    let settings = Settings {
        defaults: "    handshakeTimeout: 300ms\n    requestHeaderTimeout: 300ms".into(),
        ..Settings::default()
    };
    let h = Harness::start_with(1, settings).await;
    // Connects and never says anything.
    let mut silent = TcpStream::connect(h.addr()).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await);
    // Finishes TLS, then trickles half a request header and stops.
    let mut slow = h.h1_stream(None).await;
    slow.write_all(b"GET /api HTTP/1.1\r\nHost: api.test.local\r\n")
        .await
        .unwrap();
    slow.flush().await.unwrap();
    assert!(closed_within(&mut slow, Duration::from_secs(3)).await);
    assert_eq!(
        h.metric("apigate_tls_handshake_failures_total{listener=\"https\",reason=\"timeout\"}"),
        1.0
    );
    assert_eq!(h.replicas[0].requests_total(), 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_rejected_without_forwarding() {
    let h = Harness::start(1).await;
    let mut stream = h.h1_stream(None).await;
    let huge = "a".repeat(1024 * 1024);
    let request = format!("GET /api HTTP/1.1\r\nHost: api.test.local\r\nX-Big: {huge}\r\n\r\n");
    let _ = stream.write_all(request.as_bytes()).await;
    assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
    assert_eq!(h.replicas[0].requests_total(), 0);
    h.stop().await;
}
