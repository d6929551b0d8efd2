//! The API server sees the real caller through apigate, and spoofed identity headers
//! change nothing.

use std::sync::Arc;

use anyhow::ensure;

use super::{client, kubectl_denied, kubectl_ok, Ctx, SPOOF};

/// RBAC through apigate sees the real caller: allowed and forbidden actions for a
/// certificate user (alice, group devs) and a token user (bob, group devs).
pub(crate) async fn rbac_sees_the_caller(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let out = kubectl_ok(
        &ctx,
        "alice",
        &["auth", "can-i", "list", "pods", "-n", "default"],
    )?;
    ensure!(out.trim() == "yes", "{out}");
    kubectl_denied(&ctx, "alice", &["-n", "default", "get", "secrets"], "alice")?;
    let out = kubectl_ok(
        &ctx,
        "bob",
        &["auth", "can-i", "watch", "configmaps", "-n", "default"],
    )?;
    ensure!(out.trim() == "yes", "{out}");
    kubectl_denied(&ctx, "bob", &["get", "secrets", "-A"], "bob")?;
    kubectl_denied(
        &ctx,
        "bob",
        &["delete", "namespace", "kube-public", "--dry-run=server"],
        "bob",
    )?;
    Ok(())
}

/// Spoofed X-Remote-* headers (User, Group, Extra, Uid) have no effect, whoever sends them.
pub(crate) async fn spoofed_identity_headers_have_no_effect(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let alice = client(&ctx, Some("alice")).await?;
    let r = alice.get("/api/v1/secrets", &SPOOF).await?;
    let body = String::from_utf8_lossy(&r.body);
    ensure!(
        r.status == 403 && body.contains("User \\\"alice\\\""),
        "{} {body}",
        r.status
    );

    let bob = client(&ctx, None).await?;
    let bearer = format!("Bearer {}", ctx.testbed.get("BOB_TOKEN")?);
    let mut headers = SPOOF.to_vec();
    headers.push(("Authorization", &bearer));
    let r = bob.get("/api/v1/secrets", &headers).await?;
    let body = String::from_utf8_lossy(&r.body);
    ensure!(
        r.status == 403 && body.contains("User \\\"bob\\\""),
        "{} {body}",
        r.status
    );

    let r = bob.get("/api/v1/secrets", &SPOOF).await?;
    ensure!(
        r.status == 401 || r.status == 403,
        "anonymous with spoofed headers got {}",
        r.status
    );
    Ok(())
}
