//! Failures: a replica stopped while requests are in flight fails none of them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use apigate_e2e::{pid_alive, signal};
use apigate_test_support::client::H2Client;
use apigate_test_support::metrics::Metrics;

use super::{client, Ctx, ROUTE};

const CONNECTIONS: usize = 4;
const STREAMS_PER_CONNECTION: usize = 4;

/// Requests through apigate, per backend, by its metrics.
fn served(metrics: &Metrics, backend: &str) -> f64 {
    metrics.sum(
        "apigate_requests_total",
        &[("route", ROUTE), ("backend", backend)],
    )
}

/// Concurrent load.
struct Load {
    stop: AtomicBool,
    in_flight: AtomicUsize,
    done: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

/// One worker: GETs and dry-run POSTs on `client` until told to stop.
async fn worker(client: H2Client, load: Arc<Load>, id: usize) {
    let body = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"generateName":"e2e-stop-"}}"#;
    let mut i = 0usize;
    while !load.stop.load(Ordering::Relaxed) {
        i += 1;
        // Every fourth request is a POST: not idempotent, so never replayed once a
        // replica may have processed it.
        let post = (i + id) % 4 == 0;
        load.in_flight.fetch_add(1, Ordering::SeqCst);
        let request = async {
            if post {
                // (`http::Method::POST`, without a dependency on `http` for one name.)
                let Ok(method) = "POST".parse() else {
                    unreachable!("POST is a method")
                };
                client
                    .request(
                        method,
                        "/api/v1/namespaces/default/configmaps?dryRun=All",
                        &[("Content-Type", "application/json")],
                        body.to_vec().into(),
                    )
                    .await
            } else {
                client.get("/api/v1/namespaces/default", &[]).await
            }
        };
        let result = tokio::time::timeout(Duration::from_secs(30), request).await;
        load.in_flight.fetch_sub(1, Ordering::SeqCst);
        let what = if post { "POST" } else { "GET" };
        let failure = match result {
            Ok(Ok(r)) if r.status == if post { 201 } else { 200 } => None,
            Ok(Ok(r)) => Some(format!(
                "{what} #{i}: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            )),
            Ok(Err(e)) => Some(format!("{what} #{i}: {e}")),
            Err(_) => Some(format!("{what} #{i}: no answer within 30 s")),
        };
        load.done.fetch_add(1, Ordering::Relaxed);
        if let Some(failure) = failure {
            load.failures.lock().map(|mut f| f.push(failure)).ok();
        }
    }
}

/// A replica stopped (SIGTERM, graceful) while requests are in flight on it fails no
/// request: 16 concurrent streams over 4 HTTP/2 connections (GETs and dry-run POSTs)
/// run before, during the replica's shutdown and after it has exited. The SIGTERM is
/// sent right after apigate's `apigate_requests_in_flight` shows requests on that
/// replica, and the replica must have answered requests between SIGTERM and its exit.
pub(crate) async fn stopped_replica_fails_no_request(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    // The last replica: the Kubernetes scenario restarts the first (new pid).
    let victim = *ctx.testbed.replicas()?.last().context("no replica")?;
    let pid = *ctx
        .testbed
        .replica_pids()?
        .last()
        .context("no replica pid")?;
    ensure!(
        pid_alive(pid),
        "replica {victim} (pid {pid}) is not running"
    );
    let load = Arc::new(Load {
        stop: AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        failures: Mutex::new(Vec::new()),
    });
    let mut workers = tokio::task::JoinSet::new();
    for c in 0..CONNECTIONS {
        let connection = client(&ctx, Some("admin")).await?;
        for s in 0..STREAMS_PER_CONNECTION {
            workers.spawn(worker(
                connection.clone(),
                load.clone(),
                c * STREAMS_PER_CONNECTION + s,
            ));
        }
    }
    let result = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // SIGTERM right after apigate reports requests in flight to the victim.
        let mut sampled = None;
        for _ in 0..50 {
            let metrics = ctx.gateway.metrics().await?;
            let on_victim = metrics.sum(
                "apigate_requests_in_flight",
                &[
                    ("route", ROUTE),
                    ("backend", &victim.to_string()),
                    ("kind", "ordinary"),
                ],
            );
            if on_victim > 0.0 {
                sampled = Some((metrics, on_victim));
                break;
            }
        }
        let (before_kill, on_victim) = sampled.with_context(|| {
            format!("apigate never reported a request in flight to {victim} (50 samples)")
        })?;
        signal(pid, "TERM")?;
        let done_before = load.done.load(Ordering::SeqCst);
        let in_flight = load.in_flight.load(Ordering::SeqCst);
        let killed = Instant::now();
        // The replica keeps serving for --shutdown-delay-duration (2 s), then drains
        // and exits; the load goes on throughout.
        while pid_alive(pid) {
            ensure!(
                killed.elapsed() < Duration::from_secs(30),
                "replica {victim} (pid {pid}) still running 30 s after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let exited = killed.elapsed();
        let at_exit = ctx.gateway.metrics().await?;
        // And after it is gone: connect failures, retried elsewhere.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        anyhow::Ok((
            before_kill,
            on_victim,
            done_before,
            in_flight,
            exited,
            at_exit,
        ))
    }
    .await;
    load.stop.store(true, Ordering::SeqCst);
    let drained = tokio::time::timeout(Duration::from_secs(40), async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    workers.abort_all();
    let (before_kill, on_victim, done_before, in_flight, exited, at_exit) = result?;
    ensure!(drained.is_ok(), "the load did not stop within 40 s");
    let after = ctx.gateway.metrics().await?;
    let victim_label = victim.to_string();
    let during_shutdown = served(&at_exit, &victim_label) - served(&before_kill, &victim_label);
    let failures = load.failures.lock().map(|f| f.clone()).unwrap_or_default();
    let total = load.done.load(Ordering::SeqCst);
    let upstream_failures = after.sum(
        "apigate_upstream_failures_total",
        &[("route", ROUTE), ("backend", &victim_label)],
    ) - before_kill.sum(
        "apigate_upstream_failures_total",
        &[("route", ROUTE), ("backend", &victim_label)],
    );
    let retries = after.sum("apigate_retries_total", &[("route", ROUTE)])
        - before_kill.sum("apigate_retries_total", &[("route", ROUTE)]);
    println!(
        "    {total} requests ({done_before} before the SIGTERM; {in_flight} in flight at it, \
         {on_victim} of them on {victim}); it served {during_shutdown} while shutting down and exited after {:.1} s; \
         {upstream_failures} failed attempts on it, {retries} retries",
        exited.as_secs_f64()
    );
    ensure!(
        failures.is_empty(),
        "{} of {total} failed: {:?}",
        failures.len(),
        failures.iter().take(20).collect::<Vec<_>>()
    );
    ensure!(
        during_shutdown > 0.0,
        "{victim} served no request between its SIGTERM and its exit"
    );
    Ok(())
}
