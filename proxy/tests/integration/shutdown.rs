//! Graceful shutdown: idle connections close at once, busy HTTP/1.1 connections close
//! after their response (`Connection: close`), HTTP/2 connections get GOAWAY, and no
//! request in flight fails — so shutdown ends long before the grace period.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{
    base_config, closed_within, h1_get_version, read_body, read_head, slow_replicas, write_all,
    Harness, Pki, HOST,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_connections_at_once_and_lets_requests_finish() {
    let pki = Arc::new(Pki::new());
    let replicas = slow_replicas(&pki, 1, Duration::from_millis(600)).await;
    let config = base_config("127.0.0.1".parse().unwrap(), &[replicas[0].local_addr()]);
    let mut h = Harness::start_config(pki, replicas, config).await;

    // An HTTP/1.1 keep-alive connection, idle after one request.
    let mut idle_h1 = h.h1_stream(None).await;
    let head = h1_get_version(&mut idle_h1, HOST).await;
    assert!(
        head.to_ascii_lowercase().contains("connection: keep-alive"),
        "{head}"
    );
    read_body(&mut idle_h1, &head).await;
    // An HTTP/2 connection, idle after one request.
    let idle_h2 = h.h2(None).await;
    assert_eq!(idle_h2.get("/version", &[]).await.unwrap().status, 200);
    // An HTTP/1.1 request in flight when shutdown starts.
    let mut busy = h.h1_stream(None).await;
    write_all(
        &mut busy,
        format!("GET /api HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(150)).await;

    let running = h.running.take().unwrap();
    let grace = Duration::from_secs(30);
    let started = Instant::now();
    let shutdown = tokio::spawn(async move { running.shutdown(grace).await });

    // The request in flight completes, and its response closes the connection.
    let head = read_head(&mut busy).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    read_body(&mut busy, &head).await;
    assert!(closed_within(&mut busy, Duration::from_secs(5)).await);
    // The idle ones are closed without waiting for their idle timeout.
    assert!(closed_within(&mut idle_h1, Duration::from_secs(5)).await);

    let left = shutdown.await.unwrap();
    assert_eq!(left, 0, "every connection was closed by the drain");
    assert!(
        started.elapsed() < grace / 2,
        "shutdown did not wait out the grace period: {:?}",
        started.elapsed()
    );
    assert!(
        !idle_h2.is_open(),
        "the HTTP/2 connection was told to go away"
    );
    h.stop().await;
}
