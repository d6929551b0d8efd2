//! Flow control with the real client: kubectl (client-go 1.20) meets apigate's 429 on
//! a throttled list, waits the `Retry-After` it was given, retries and succeeds.

use std::sync::Arc;

use anyhow::ensure;

use super::{kubectl_ok, Ctx, ROUTE};

/// The policy the e2e gateway sets on its route: lists in `kube-public`, one token
/// every four seconds per client (no other scenario lists there).
pub(crate) const POLICY: &str = "e2e-kube-public-lists";

pub(crate) async fn kubectl_waits_out_a_429_and_retries(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let rejected = |m: &apigate_test_support::metrics::Metrics| {
        m.sum(
            "apigate_flow_control_rejected_total",
            &[("route", ROUTE), ("policy", POLICY), ("reason", "rate")],
        )
    };
    let before = rejected(&ctx.gateway.metrics().await?);
    let list = ["-n", "kube-public", "get", "configmaps", "-o", "name"];
    // The first list takes the client's one token; the second, a moment later, is
    // refused with a 429 and a `Retry-After` of up to 4 s, which client-go honours
    // before it retries.
    kubectl_ok(&ctx, "admin", &list)?;
    kubectl_ok(&ctx, "admin", &list)?;
    let after = rejected(&ctx.gateway.metrics().await?);
    ensure!(
        after > before,
        "the second list was throttled at least once ({before} -> {after})"
    );
    Ok(())
}
