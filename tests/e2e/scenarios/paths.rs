//! The other ways in: passthrough (kubectl's own TLS straight to kube-apiserver) and
//! the in-cluster CONNECT path.

use std::sync::Arc;

use anyhow::ensure;
use apigate_test_support::metrics::Metrics;

use super::kubectl::kubectl_get_list_create_watch;
use super::{kubectl_denied, kubectl_ok, Ctx};

/// Passthrough: kubectl's client certificate goes straight to kube-apiserver (no
/// front-proxy headers involved), certificate and token users alike.
pub(crate) async fn passthrough_with_kubectl(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    // Splices to the testbed's replicas on the passthrough route.
    let replicas = ctx.testbed.replicas()?;
    let spliced = |metrics: &Metrics| -> f64 {
        replicas
            .iter()
            .map(|r| {
                metrics.sum(
                    "apigate_passthrough_connections_total",
                    &[
                        ("route", "e2e-passthrough/testbed-passthrough"),
                        ("backend", &r.to_string()),
                    ],
                )
            })
            .sum()
    };
    let before = spliced(&ctx.gateway.metrics().await?);
    kubectl_ok(
        &ctx,
        "passthrough-alice",
        &["-n", "default", "get", "configmaps"],
    )?;
    kubectl_denied(
        &ctx,
        "passthrough-alice",
        &["-n", "default", "get", "secrets"],
        "alice",
    )?;
    kubectl_ok(&ctx, "passthrough-bob", &["-n", "default", "get", "pods"])?;
    let spliced = spliced(&ctx.gateway.metrics().await?) - before;
    ensure!(
        spliced >= 3.0,
        "kubectl went through the passthrough route ({spliced} connections)"
    );
    Ok(())
}

/// The in-cluster CONNECT path carries kubectl traffic: a forwarder that speaks CONNECT
/// with X-Gardener-Destination (like the shoot's apiserver-proxy) in front of apigate.
pub(crate) async fn connect_path_with_kubectl(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    kubectl_get_list_create_watch(&ctx, "connect-alice").await?;
    kubectl_denied(
        &ctx,
        "connect-alice",
        &["-n", "default", "get", "secrets"],
        "alice",
    )?;
    kubectl_ok(&ctx, "connect-bob", &["-n", "default", "get", "configmaps"])?;
    kubectl_denied(&ctx, "connect-bob", &["get", "secrets", "-A"], "bob")?;
    Ok(())
}
