//! Balancing: every stream of one HTTP/2 connection is spread over the replicas, and
//! a watch keeps streaming while other requests flow.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};

use super::{client, kubectl_ok, Ctx};

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
