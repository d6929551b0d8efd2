//! Malformed and hostile input is refused within a bounded time, counted, answered with a
//! kube `Status` where apigate answers at all, and never forwarded — and never harms
//! another client's connection or watch.

use std::sync::Arc;
use std::time::Duration;

use apigate_test_support::config::{millis, route};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{
    alert, client_hello, closed_within, eventually, h1_get_version, h2_frame, read_body, read_head,
    status, write_all, Harness, HOST, OTHER_HOST, ROUTE,
};

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
        eventually(Duration::from_secs(2), || h.metrics().sum(
            "apigate_connections_total",
            &[("listener", "https"), ("result", "not_tls")]
        ) == 3.0)
        .await
    );
    assert_eq!(h.replicas[0].requests_total(), 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_missing_sni_is_refused_before_any_certificate() {
    let h = Harness::start(1).await;
    for name in ["other.test.local", "127.0.0.1"] {
        let mut tcp = TcpStream::connect(h.addr()).await.unwrap();
        tcp.write_all(&client_hello(name)).await.unwrap();
        // Everything apigate sends before closing: no handshake record at all, so no
        // ServerHello and no Certificate.
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
        assert!(matches!(read, Ok(Ok(_)) | Ok(Err(_))), "closed in time");
        // A fatal unrecognized_name alert, and nothing else: no ServerHello, no
        // Certificate.
        assert_eq!(answer, alert(112), "{name}");
    }
    let m = h.metrics();
    assert_eq!(
        m.sum("apigate_connections_total", &[("result", "unknown_sni")]),
        1.0
    );
    assert_eq!(
        m.sum("apigate_connections_total", &[("result", "no_sni")]),
        1.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_at_the_handshake_and_header_deadlines() {
    let h = Harness::start_with(1, |c| {
        c.gateway.spec.defaults.handshake_timeout = Some(millis(300));
        c.gateway.spec.defaults.request_header_timeout = Some(millis(300));
    })
    .await;
    // Connects and never says anything.
    let mut silent = TcpStream::connect(h.addr()).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await);
    // Finishes TLS, then trickles half a request header and stops.
    let mut slow = h.h1_stream(None).await;
    write_all(&mut slow, b"GET /api HTTP/1.1\r\nHost: api.test.local\r\n").await;
    assert!(closed_within(&mut slow, Duration::from_secs(3)).await);
    let m = h.metrics();
    assert_eq!(
        m.sum(
            "apigate_tls_handshake_failures_total",
            &[("listener", "https"), ("reason", "timeout")]
        ),
        1.0
    );
    assert_eq!(h.replicas[0].requests_total(), 0);
    h.stop().await;
}

/// Send `bytes` one at a time every `pause` until the peer closes; true when it closed
/// before everything was sent.
async fn trickled_until_closed<S>(stream: &mut S, bytes: &[u8], pause: Duration) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut buf = [0u8; 256];
    for byte in bytes {
        if stream.write_all(std::slice::from_ref(byte)).await.is_err()
            || stream.flush().await.is_err()
        {
            return true;
        }
        match tokio::time::timeout(pause, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            _ => {}
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_http1_request_head_has_the_header_deadline_not_only_the_first() {
    let h = Harness::start_with(1, |c| {
        c.gateway.spec.defaults.request_header_timeout = Some(millis(500));
    })
    .await;
    let mut stream = h.h1_stream(None).await;
    let head = h1_get_version(&mut stream, HOST).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    read_body(&mut stream, &head).await;
    // The next head, one byte every 100 ms: each byte would restart a read timeout.
    let next = format!(
        "GET /version HTTP/1.1\r\nHost: {HOST}\r\nX-Slow: {}\r\n\r\n",
        "a".repeat(100)
    );
    assert!(
        trickled_until_closed(&mut stream, next.as_bytes(), Duration::from_millis(100)).await,
        "the connection was closed while the head was still trickling in"
    );
    assert_eq!(
        h.metrics().sum(
            "apigate_request_head_refusals_total",
            &[("route", ROUTE), ("reason", "timeout")]
        ),
        1.0
    );
    assert_eq!(
        h.replicas[0].requests_total(),
        1,
        "only the first request was forwarded"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_http2_header_block_has_the_header_deadline() {
    let h = Harness::start_with(1, |c| {
        c.gateway.spec.defaults.request_header_timeout = Some(millis(500));
    })
    .await;
    let config =
        apigate_test_support::client::client_config(&h.tls(None), vec![b"h2".to_vec()]).unwrap();
    let tcp = TcpStream::connect(h.addr()).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(rustls::pki_types::ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .unwrap();
    // A whole first request: GET https://api.test.local/version (HPACK static table and
    // literal authority), END_HEADERS | END_STREAM.
    let mut block = vec![0x82, 0x87]; // :method GET, :scheme https
    block.push(0x44); // :path, literal with incremental indexing
    block.push(8);
    block.extend_from_slice(b"/version");
    block.push(0x41); // :authority
    block.push(HOST.len() as u8);
    block.extend_from_slice(HOST.as_bytes());
    let mut start = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    start.extend(h2_frame(0x4, 0, 0, &[]));
    start.extend(h2_frame(0x1, 0x4 | 0x1, 1, &block));
    write_all(&mut tls, &start).await;
    assert!(
        eventually(Duration::from_secs(5), || h.replicas[0].requests_total()
            == 1)
        .await,
        "the first request was served"
    );
    // Stream 3: a HEADERS frame whose payload (a valid header block) arrives one byte
    // every 100 ms. The HTTP/2 layer waits for whole frames without any time limit.
    let mut block = vec![0x82, 0x40, 5];
    block.extend_from_slice(b"x-abc");
    block.push(90);
    block.extend(std::iter::repeat_n(b'a', 90));
    let headers = h2_frame(0x1, 0x4 | 0x1, 3, &block);
    let closed = trickled_until_closed(&mut tls, &headers, Duration::from_millis(100)).await;
    assert!(
        closed,
        "the connection was closed while the header block was trickling in"
    );
    assert_eq!(
        h.metrics().sum(
            "apigate_request_head_refusals_total",
            &[("reason", "timeout")]
        ),
        1.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_http1_heads_get_431_and_are_never_forwarded() {
    let h = Harness::start(1).await;
    for size in [100 * 1024, 1024 * 1024] {
        let mut stream = h.h1_stream(None).await;
        let huge = "a".repeat(size);
        let request = format!("GET /api HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {huge}\r\n\r\n");
        let _ = stream.write_all(request.as_bytes()).await;
        let head = read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 431"), "{size}: {head}");
        let body = read_body(&mut stream, &head).await;
        assert_eq!(status(&body)["code"], 431);
        assert!(closed_within(&mut stream, Duration::from_secs(5)).await);
    }
    assert_eq!(h.replicas[0].requests_total(), 0);
    assert_eq!(
        h.metrics().sum(
            "apigate_request_head_refusals_total",
            &[("reason", "too_large")]
        ),
        2.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clients_oversized_headers_never_harm_another_clients_watch() {
    let h = Harness::start_with(3, |c| {
        // Even a single failure would eject a replica if it counted.
        c.gateway.spec.defaults.ejection.consecutive_failures = Some(1);
    })
    .await;
    let victim = h.h2(Some(&h.pki.alice)).await;
    let mut watch = victim
        .stream("/api/v1/namespaces/default/pods?watch=true", &[])
        .await
        .unwrap();
    assert!(watch.next_chunk(Duration::from_secs(5)).await.is_some());
    let served = |h: &Harness| h.replicas.iter().map(|r| r.requests_total()).sum::<u64>();
    let before = served(&h);

    // An anonymous attacker: 100 KB (refused by apigate's limit) and 3 MB (refused by the
    // HTTP/2 layer) header blocks, several times, each on the attacker's own connection.
    for size in [100 * 1024, 3 * 1024 * 1024, 100 * 1024, 3 * 1024 * 1024] {
        let attacker = h.h2(None).await;
        let big = "b".repeat(size);
        // A stream or connection reset is an acceptable refusal too.
        if let Ok(r) = attacker
            .get("/api/v1/namespaces/default/pods", &[("x-big", &big)])
            .await
        {
            assert_eq!(r.status, 431, "{size}");
        }
    }
    assert_eq!(served(&h), before, "nothing was forwarded");
    let m = h.metrics();
    assert_eq!(m.sum("apigate_retries_total", &[]), 0.0);
    assert_eq!(m.sum("apigate_upstream_failures_total", &[]), 0.0);
    assert_eq!(m.sum("apigate_backend_ejections_total", &[]), 0.0);
    // The victim's watch and connection are untouched.
    for _ in 0..3 {
        let chunk = watch.next_chunk(Duration::from_secs(5)).await.unwrap();
        assert!(chunk.contains("\"type\""), "{chunk}");
    }
    assert_eq!(victim.get("/version", &[]).await.unwrap().status, 200);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparseable_requests_and_connect_get_a_kube_status() {
    let h = Harness::start(1).await;
    for (request, code) in [
        // A header line without a colon: the HTTP engine refuses it before apigate's
        // hooks; apigate still answers with its Status.
        (
            format!("GET /api HTTP/1.1\r\nHost: {HOST}\r\nBroken header line\r\n\r\n"),
            400,
        ),
        (
            format!("CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n"),
            405,
        ),
    ] {
        let mut stream = h.h1_stream(None).await;
        write_all(&mut stream, request.as_bytes()).await;
        let head = read_head(&mut stream).await;
        assert!(head.starts_with(&format!("HTTP/1.1 {code}")), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        let body = read_body(&mut stream, &head).await;
        assert_eq!(status(&body)["code"], code);
    }
    // CONNECT on HTTP/2.
    let r = h.h2(None).await.connect_method().await.unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(status(&r.body)["code"], 405);
    assert_eq!(h.replicas[0].requests_total(), 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_another_routes_host_is_misdirected() {
    let h = Harness::start_with(1, |c| {
        let backends: Vec<std::net::SocketAddr> = c.routes[0]
            .spec
            .backends
            .static_addresses
            .iter()
            .map(|b| b.parse().unwrap())
            .collect();
        c.routes.push(route::terminate(
            "other",
            "garden-other",
            &[OTHER_HOST],
            &backends,
        ));
    })
    .await;
    let client = h.h2(None).await;
    // Another route's host name on this connection (SNI api.test.local): 421.
    let r = client
        .with_authority(OTHER_HOST)
        .get("/version", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 421);
    assert_eq!(status(&r.body)["code"], 421);
    // In-cluster names and addresses are not another route's: served.
    for authority in ["kubernetes.default.svc", "10.96.0.1", HOST] {
        let r = client
            .with_authority(authority)
            .get("/version", &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{authority}");
    }
    // HTTP/1.1 Host header, with a port.
    let mut stream = h.h1_stream(None).await;
    let head = h1_get_version(&mut stream, &format!("{OTHER_HOST}:443")).await;
    assert!(head.starts_with("HTTP/1.1 421"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "a misdirected request leaves the connection open: {head}"
    );
    read_body(&mut stream, &head).await;
    // The client's next request on the same connection is served.
    let head = h1_get_version(&mut stream, HOST).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(h.replicas[0].requests_total(), 4);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_idle_timeout_but_not_while_a_stream_is_open() {
    let h = Harness::start_with(1, |c| {
        c.gateway.spec.defaults.idle_timeout = Some(apigate_test_support::config::secs(1));
    })
    .await;
    // HTTP/1.1 keep-alive, idle after one request.
    let mut h1 = h.h1_stream(None).await;
    let head = h1_get_version(&mut h1, HOST).await;
    read_body(&mut h1, &head).await;
    // HTTP/2, idle after one request; and one carrying an open watch.
    let idle = h.h2(None).await;
    assert_eq!(idle.get("/version", &[]).await.unwrap().status, 200);
    let busy = h.h2(Some(&h.pki.alice)).await;
    let mut watch = busy
        .stream("/api/v1/namespaces/default/pods?watch=true", &[])
        .await
        .unwrap();
    assert!(
        closed_within(&mut h1, Duration::from_secs(5)).await,
        "HTTP/1.1"
    );
    assert!(
        eventually(Duration::from_secs(5), || !idle.is_open()).await,
        "HTTP/2"
    );
    // The watch's connection outlives several idle timeouts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(busy.is_open());
    assert!(watch.next_chunk(Duration::from_secs(5)).await.is_some());
    assert_eq!(h.replicas[0].open_watches(), 1);
    h.stop().await;
}

/// The kernel's timer on the TCP socket from `local` to `remote` (IPv4), from
/// `/proc/net/tcp`: which one runs (0 none, 1 retransmit, 2 keepalive, ...) and in how
/// many clock ticks it fires.
fn tcp_timer(local: std::net::SocketAddr, remote: std::net::SocketAddr) -> Option<(u8, u64)> {
    let hex = |a: std::net::SocketAddr| match a.ip() {
        std::net::IpAddr::V4(ip) => {
            format!("{:08X}:{:04X}", u32::from_le_bytes(ip.octets()), a.port())
        }
        std::net::IpAddr::V6(_) => String::new(),
    };
    let (local, remote) = (hex(local), hex(remote));
    std::fs::read_to_string("/proc/net/tcp")
        .ok()?
        .lines()
        .skip(1)
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(1) != Some(&local.as_str()) || fields.get(2) != Some(&remote.as_str()) {
                return None;
            }
            let (kind, when) = fields.get(5)?.split_once(':')?;
            Some((
                u8::from_str_radix(kind, 16).ok()?,
                u64::from_str_radix(when, 16).ok()?,
            ))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sockets_carry_tcp_keepalive_so_a_vanished_host_is_closed_by_the_kernel() {
    let h = Harness::start_with(1, |c| {
        c.gateway.spec.connections.tcp_keepalive_idle = Some(apigate_test_support::config::secs(7));
    })
    .await;
    let tcp = TcpStream::connect(h.addr()).await.unwrap();
    let client_end = tcp.local_addr().unwrap();
    let client = apigate_test_support::client::H2Client::over(tcp, &h.tls(None))
        .await
        .unwrap();
    assert_eq!(client.get("/version", &[]).await.unwrap().status, 200);
    // Once the exchange is acknowledged, the only timer on apigate's side of the idle
    // connection is the keepalive's, due within the configured 7 s (the kernel counts
    // 100 ticks a second here).
    let armed = eventually(
        Duration::from_secs(5),
        || matches!(tcp_timer(h.addr(), client_end), Some((2, when)) if when > 0 && when <= 700),
    )
    .await;
    assert!(armed, "{:?}", tcp_timer(h.addr(), client_end));
    h.stop().await;
}
