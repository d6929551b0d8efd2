//! Long-running requests: watches stream unbuffered; SPDY and WebSocket upgrades pass;
//! upgraded and passthrough streams end after `longRunningTimeout` of silence in both
//! directions, and when a reload revokes them.

use std::time::Duration;

use apigate_fake_apiserver::REPLICA_HEADER;
use apigate_test_support::client::{client_config, ClientTls};
use apigate_test_support::config::{millis, route, secs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{
    allow_only, closed_within, eventually, read_head, write_all, Harness, HOST, ROUTE, TOKEN,
};

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
    let m = h.metrics();
    assert_eq!(
        m.sum("apigate_requests_in_flight", &[("kind", "long_running")]),
        1.0,
        "the watch is counted apart"
    );
    // Ordinary requests end their count a moment after their response is delivered.
    assert!(
        eventually(Duration::from_secs(2), || h
            .metrics()
            .sum("apigate_requests_in_flight", &[("kind", "ordinary")])
            == 0.0)
        .await
    );
    h.stop().await;
}

/// Open an exec upgrade; the stream after the `101`.
async fn exec(
    h: &Harness,
    upgrade: &str,
    extra: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut stream = h.h1_stream(None).await;
    let request = format!(
        "POST /api/v1/namespaces/default/pods/p/exec?command=sh HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\n{extra}\r\n"
    );
    write_all(&mut stream, request.as_bytes()).await;
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{upgrade}: {head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("upgrade: {}", upgrade.to_ascii_lowercase())),
        "{head}"
    );
    stream
}

async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    message: &[u8],
) {
    write_all(stream, message).await;
    let mut echoed = vec![0u8; message.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed, message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spdy_upgrade_passes_through() {
    let h = Harness::start(1).await;
    let mut stream = exec(
        &h,
        "SPDY/3.1",
        "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n",
    )
    .await;
    for message in [&b"hello"[..], b"kubectl exec bytes \x00\x01\x02"] {
        echo(&mut stream, message).await;
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through() {
    let h = Harness::start(1).await;
    let mut stream = exec(
        &h,
        "websocket",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n",
    )
    .await;
    echo(&mut stream, b"hello").await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_exec_session_outlives_the_ordinary_request_timeout() {
    let h = Harness::start_with(1, |c| {
        c.gateway.spec.defaults.request_timeout = Some(millis(300));
        c.gateway.spec.defaults.long_running_timeout = Some(secs(3600));
    })
    .await;
    let mut stream = exec(&h, "SPDY/3.1", "").await;
    // Quiet for longer than requestTimeout on both sides: must not be cut.
    for message in [&b"one"[..], b"two"] {
        tokio::time::sleep(Duration::from_millis(800)).await;
        echo(&mut stream, message).await;
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_exec_session_ends_after_the_long_running_timeout() {
    let h = Harness::start_with(1, |c| {
        c.gateway.spec.defaults.request_timeout = Some(millis(100));
        c.gateway.spec.defaults.long_running_timeout = Some(millis(1500));
    })
    .await;
    let mut stream = exec(&h, "SPDY/3.1", "").await;
    // Traffic keeps it open past the limit (with a wide margin for a loaded machine)...
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        echo(&mut stream, b"keepalive").await;
    }
    // ...silence in both directions ends it.
    assert!(closed_within(&mut stream, Duration::from_secs(10)).await);
    assert_eq!(
        h.metrics().sum(
            "apigate_tunnels_total",
            &[("kind", "upgrade"), ("end", "idle_timeout")]
        ),
        1.0
    );
    h.stop().await;
}

fn passthrough_tls(h: &Harness) -> ClientTls {
    ClientTls {
        ca_pem: h.pki.replica_ca.cert_pem(),
        client_cert: None,
        server_name: HOST.into(),
    }
}

/// An HTTP/1.1 connection through a passthrough route, with one request done on it.
async fn passthrough_connection(h: &Harness) -> tokio_rustls::client::TlsStream<TcpStream> {
    let config = client_config(&passthrough_tls(h), vec![b"http/1.1".to_vec()]).unwrap();
    let tcp = TcpStream::connect(h.addr()).await.unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(rustls::pki_types::ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .unwrap();
    write_all(&mut stream, b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let body = crate::support::read_body(&mut stream, &head).await;
    assert!(!body.is_empty());
    stream
}

fn passthrough_route(c: &mut apigate_test_support::config::Config) {
    let backends: Vec<std::net::SocketAddr> = c.routes[0]
        .spec
        .backends
        .static_addresses
        .iter()
        .map(|b| b.parse().unwrap())
        .collect();
    c.routes[0] = route::passthrough("shoot", "garden-test", &[HOST], &backends);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_passthrough_connection_ends_after_the_long_running_timeout() {
    let h = Harness::start_with(1, |c| {
        passthrough_route(c);
        c.gateway.spec.defaults.request_timeout = Some(millis(100));
        c.gateway.spec.defaults.long_running_timeout = Some(millis(600));
    })
    .await;
    let mut stream = passthrough_connection(&h).await;
    assert!(closed_within(&mut stream, Duration::from_secs(10)).await);
    assert_eq!(
        h.metrics().sum(
            "apigate_tunnels_total",
            &[
                ("route", ROUTE),
                ("kind", "passthrough"),
                ("end", "idle_timeout")
            ]
        ),
        1.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_closes_exec_sessions_and_passthrough_splices() {
    // An exec session on a terminating route.
    let mut h = Harness::start(1).await;
    let mut session = exec(&h, "SPDY/3.1", "").await;
    echo(&mut session, b"before").await;
    let mut revoked = h.config.clone();
    allow_only(&mut revoked, &["10.0.0.0/8"]);
    h.reload(revoked).await;
    assert!(
        closed_within(&mut session, Duration::from_secs(5)).await,
        "exec session closed"
    );
    let m = h.metrics();
    assert_eq!(
        m.sum(
            "apigate_tunnels_total",
            &[("kind", "upgrade"), ("end", "revoked")]
        ),
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

    // A passthrough splice.
    let mut h = Harness::start_with(1, passthrough_route).await;
    let mut stream = passthrough_connection(&h).await;
    let mut revoked = h.config.clone();
    allow_only(&mut revoked, &["10.0.0.0/8"]);
    h.reload(revoked).await;
    assert!(
        closed_within(&mut stream, Duration::from_secs(5)).await,
        "splice closed"
    );
    assert_eq!(
        h.metrics().sum(
            "apigate_tunnels_total",
            &[("kind", "passthrough"), ("end", "revoked")]
        ),
        1.0
    );
    let _ = stream.shutdown().await;
    h.stop().await;
}
