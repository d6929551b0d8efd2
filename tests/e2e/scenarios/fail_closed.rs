//! The Kubernetes source fails closed: allowlists that come from Gardener acl
//! Extensions are never dropped for want of an answer. Through an API front that
//! answers 403 on cue (`apigate_e2e::front`), and by removing and reinstalling the
//! Extension CRD, against the real kube-apiserver:
//! - discovery of the Extension API answering 403 at start keeps apigate not ready,
//!   and once it answers, the Extension's allowlist is enforced;
//! - while the Extension watch fails, a denying allowlist stays in force, even when the
//!   Extension is deleted or the route changes meanwhile;
//! - an Extension API installed after apigate started is found without a restart.
//!
//! Runs after `kubernetes_source`, whose namespace, Secrets and EndpointSlices it reuses
//! (creating them when it runs alone).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use apigate_e2e::front::FaultyFront;
use apigate_e2e::kube::{self, admin, admin_ok, apply, KubeGateway, NAMESPACE};

use super::kubernetes_source::condition;
use super::Ctx;

const EXTENSION_API: &str = "/apis/extensions.gardener.cloud";
const EXTENSION_CRD: &str = "customresourcedefinition/extensions.extensions.gardener.cloud";

/// The route's objects exist (created here, reusing what `kubernetes_source` left) and
/// its Extension allows us.
pub(crate) fn ensure_objects(ctx: &Ctx) -> anyhow::Result<()> {
    let testbed = &ctx.testbed;
    let exists = admin(
        testbed,
        &["-n", NAMESPACE, "get", "apiserverroute", "kube-apiserver"],
        None,
    )?
    .status
    .success();
    if !exists {
        // `kubernetes_source` ends by deleting its route; its Secrets may remain.
        kube::install_crds(testbed)?;
        let backed = admin(
            testbed,
            &["-n", NAMESPACE, "get", "secret", "serving"],
            None,
        )?
        .status
        .success();
        if !backed {
            kube::create_backing_objects(testbed, NAMESPACE)?;
        }
        for (i, replica) in testbed.replicas()?.iter().enumerate() {
            apply(testbed, &kube::slice_yaml(i, *replica, true))?;
        }
        apply(
            testbed,
            &kube::route_yaml(NAMESPACE, "kube-apiserver", "serving"),
        )?;
    }
    apply(testbed, &kube::extension_yaml("127.0.0.0/8"))
}

/// Put back what the scenario changed: the Extension CRD, an allowing Extension, the
/// route's hostnames.
fn restore(ctx: &Ctx) -> anyhow::Result<()> {
    kube::install_crds(&ctx.testbed)?;
    apply(&ctx.testbed, &kube::extension_yaml("127.0.0.0/8"))?;
    apply(
        &ctx.testbed,
        &kube::route_yaml(NAMESPACE, "kube-apiserver", "serving"),
    )
}

async fn until_ready(gateway: &KubeGateway, limit: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while gateway.readyz().await? != 200 {
        ensure!(
            started.elapsed() < limit,
            "/readyz not 200 within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(started.elapsed())
}

pub(crate) async fn kubernetes_source_fails_closed(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    ensure_objects(&ctx)?;
    let result = scenario(&ctx).await;
    let restored = restore(&ctx);
    result.and(restored)
}

async fn scenario(ctx: &Ctx) -> anyhow::Result<()> {
    let testbed = &ctx.testbed;
    let ca = std::fs::read_to_string(testbed.pki("ca.crt")?)?;

    // 1. Discovery of the Extension API answers 403: not ready, nothing served.
    let front = FaultyFront::start(testbed).await?;
    front.refuse(&[EXTENSION_API]);
    let mut gateway = KubeGateway::start_with(testbed, Some(front.client()?)).await?;
    gateway.start_source()?;
    let address = gateway.address()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(
        gateway.readyz().await? == 503,
        "ready although the Extension API could not be discovered"
    );
    ensure!(
        kube::presented_certificate(address, kube::K8S_HOST, &ca)
            .await
            .is_err(),
        "served a route before its allowlist could be known"
    );
    let errors = gateway.metrics().await?.sum(
        "apigate_kubernetes_watch_errors_total",
        &[("resource", "extensions")],
    );
    ensure!(errors >= 1.0, "discovery failures not counted: {errors}");
    front.refuse(&[]);
    let ready = until_ready(&gateway, Duration::from_secs(30)).await?;
    println!(
        "    discovery 403 for 3 s, then 200: ready {} ms later",
        ready.as_millis()
    );
    kube::until_handshake(
        address,
        &ca,
        true,
        Duration::from_secs(10),
        "allowed by the Extension",
    )
    .await?;
    apply(testbed, &kube::extension_yaml("10.0.0.0/8"))?;
    kube::until_handshake(
        address,
        &ca,
        false,
        Duration::from_secs(10),
        "denied by the edited Extension",
    )
    .await
    .context("the Extension found after discovery recovered is enforced")?;

    // 2. The Extension watch fails mid-run: the denying allowlist stays, whatever
    // happens to the Extension or the route meanwhile.
    front.refuse(&[EXTENSION_API]);
    front.cut();
    admin_ok(
        testbed,
        &["-n", NAMESPACE, "delete", "extension", "acl"],
        None,
    )?;
    let mut changed = kube::route_yaml(NAMESPACE, "kube-apiserver", "serving");
    changed = changed.replace(
        &format!("hostnames: [{}]", kube::K8S_HOST),
        &format!("hostnames: [{}, kubernetes.default]", kube::K8S_HOST),
    );
    apply(testbed, &changed)?;
    condition(
        testbed,
        "the route waits for the Extensions",
        "AclExtensionsUnreadable",
    )
    .await?;
    ensure!(
        kube::presented_certificate(address, kube::K8S_HOST, &ca)
            .await
            .is_err(),
        "the allowlist was dropped while the Extensions could not be read"
    );
    ensure!(
        kube::presented_certificate(address, "kubernetes.default", &ca)
            .await
            .is_err(),
        "the route's new version was served while the Extensions could not be read"
    );
    front.refuse(&[]);
    // Readable again: the Extension is gone, so the route (new version) allows everyone.
    let recovered = kube::until_handshake(
        address,
        &ca,
        true,
        Duration::from_secs(30),
        "allowed once the deletion is seen",
    )
    .await?;
    println!(
        "    Extension watch failing: denial kept; recovered {} ms after the API answered",
        recovered.as_millis()
    );
    gateway.stop().await;
    drop(front);

    // 3. The Extension API appears after apigate started.
    admin_ok(
        testbed,
        &["delete", EXTENSION_CRD, "--wait=true", "--timeout=60s"],
        None,
    )?;
    let mut gateway = KubeGateway::start(testbed).await?;
    gateway.start_source()?;
    let address = gateway.address()?;
    until_ready(&gateway, Duration::from_secs(30)).await?;
    kube::until_handshake(
        address,
        &ca,
        true,
        Duration::from_secs(10),
        "no Extension API: no allowlist",
    )
    .await?;
    kube::install_crds(testbed)?;
    let installed = Instant::now();
    apply(testbed, &kube::extension_yaml("10.0.0.0/8"))?;
    kube::until_handshake(
        address,
        &ca,
        false,
        Duration::from_secs(30),
        "denied by an Extension of an API installed later",
    )
    .await?;
    println!(
        "    Extension API installed after start: its allowlist enforced {} ms after the CRD",
        installed.elapsed().as_millis()
    );
    gateway.stop().await;
    Ok(())
}
