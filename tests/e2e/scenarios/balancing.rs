//! Balancing: every stream of one HTTP/2 connection is spread over the replicas, and
//! a watch keeps streaming while other requests flow, or while nothing does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};

use super::{client, kubectl_ok, Ctx, ROUTE};

/// 300 requests over ONE HTTP/2 connection land on all 3 replicas within ±15% of an
/// even share, counted by each replica's own apiserver_request_total.
pub(crate) async fn one_connection_spreads_over_all_replicas(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let labels = [("resource", "namespaces"), ("verb", "GET")];
    let replicas = ctx.testbed.replicas()?;
    let mut before = Vec::new();
    for r in &replicas {
        before.push(ctx.testbed.request_total(*r, &labels).await?);
    }
    let admin = client(&ctx, Some("admin")).await?;
    let statuses = admin
        .spread("/api/v1/namespaces/default", &[], ":status-unused", 300, 10)
        .await?;
    ensure!(statuses.values().sum::<usize>() == 300, "{statuses:?}");
    let mut shares = BTreeMap::new();
    for (r, b) in replicas.iter().zip(before) {
        let after = ctx.testbed.request_total(*r, &labels).await?;
        shares.insert(r.to_string(), after - b);
    }
    println!("    per-replica requests: {shares:?}");
    for (replica, n) in &shares {
        ensure!(
            (85.0..=115.0).contains(n),
            "{replica} served {n} of 300: {shares:?}"
        );
    }
    Ok(())
}

/// A watch keeps streaming through apigate while other requests flow on the same
/// connection and on others.
pub(crate) async fn watch_survives_while_requests_flow(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let admin = client(&ctx, Some("admin")).await?;
    let mut watch = admin
        .stream(
            "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=120",
            &[],
        )
        .await?;
    ensure!(watch.status == 200, "watch status {}", watch.status);
    let mut received = String::new();
    for i in 0..5 {
        let name = format!("e2e-flow-{i}");
        kubectl_ok(
            &ctx,
            "admin",
            &["-n", "default", "create", "configmap", &name],
        )?;
        let counts = admin
            .spread("/api/v1/namespaces/default", &[], "content-type", 20, 4)
            .await?;
        ensure!(counts.values().sum::<usize>() == 20, "{counts:?}");
        let end = Instant::now() + Duration::from_secs(15);
        while !received.contains(&format!("\"name\":\"{name}\"")) {
            ensure!(Instant::now() < end, "watch did not deliver {name}");
            match watch.next_chunk(Duration::from_secs(15)).await {
                Some(chunk) => received.push_str(&chunk),
                None => bail!("watch ended before {name}"),
            }
        }
    }
    Ok(())
}

/// A `kubectl get --watch` that sees nothing for several of apigate's keepalive
/// intervals (500 ms in this gateway) is PINGed, answers through kubectl's own HTTP/2
/// stack, and still delivers the next event; no client of the whole run failed to
/// answer a PING, and none tripped an abuse bound.
pub(crate) async fn a_quiet_kubectl_watch_answers_keepalive_pings(
    ctx: Arc<Ctx>,
) -> anyhow::Result<()> {
    let name = format!("e2e-keepalive-{}", std::process::id());
    let watcher = ctx.clone();
    let watch = std::thread::spawn(move || {
        // kubectl ends the watch itself after 10 s (the later flag wins).
        let args = [
            "-n",
            "default",
            "get",
            "configmaps",
            "--watch-only",
            "-o",
            "name",
            "--request-timeout=10s",
        ];
        watcher.gateway.kubectl(&watcher.testbed, "admin", &args)
    });
    // Six intervals of silence on the watch, then an event.
    tokio::time::sleep(Duration::from_secs(3)).await;
    kubectl_ok(
        &ctx,
        "admin",
        &["-n", "default", "create", "configmap", &name],
    )?;
    let output = apigate_e2e::blocking(|| watch.join())
        .map_err(|_| anyhow::anyhow!("the watch thread panicked"))??;
    let seen = apigate_e2e::text(&output);
    kubectl_ok(
        &ctx,
        "admin",
        &["-n", "default", "delete", "configmap", &name],
    )?;
    ensure!(
        seen.contains(&format!("configmap/{name}")),
        "the quiet watch did not deliver {name}: {seen}"
    );
    let metrics = ctx.gateway.metrics().await?;
    let timeouts = metrics.sum(
        "apigate_http2_keepalive_timeouts_total",
        &[("route", ROUTE)],
    );
    ensure!(timeouts == 0.0, "{timeouts} clients answered no PING");
    let abuse = metrics.sum("apigate_http2_abuse_total", &[]);
    ensure!(abuse == 0.0, "{abuse} clients tripped an abuse bound");
    Ok(())
}
