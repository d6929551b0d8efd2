//! Configuration rollouts in front of the real kube-apiservers: a bad revision freezes on
//! the canary route while the other route never fails a request; a good one is promoted
//! after the bake. apigate runs from its own configuration file here, with two routes on
//! the testbed's replicas (`shared_rollout` covers the Kubernetes source's shared
//! decision).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use apigate_e2e::admin_get;
use apigate_test_support::client::H2Client;

use super::Ctx;

/// The canary route's SNI and the other route's (both in the replicas' certificate).
const CANARY: &str = "kubernetes.default";
const OTHER: &str = "localhost";
/// The name the replicas' certificates carry; a revision with another one gets 502s.
const GOOD_NAME: &str = "kubernetes.default.svc";

fn config(ctx: &Ctx, server_name: &str, balancing: &str) -> anyhow::Result<String> {
    let backends: Vec<String> = ctx
        .testbed
        .replicas()?
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    let pki = |f: &str| ctx.testbed.pki(f).map(|p| p.display().to_string());
    let (cert, key, ca) = (pki("apiserver.crt")?, pki("apiserver.key")?, pki("ca.crt")?);
    let (fp_cert, fp_key) = (
        pki("front-proxy-client.crt")?,
        pki("front-proxy-client.key")?,
    );
    let route = |name: &str, host: &str, labels: &str| {
        format!(
            "---
apiVersion: apigate.dev/v1alpha1
kind: ApiServerRoute
metadata: {{name: {name}, namespace: e2e-{name}, labels: {{{labels}}}}}
spec:
  hostnames: [{host}]
  balancing: {balancing}
  backends: {{static: [{backends}]}}
  tls: {{certFile: {cert}, keyFile: {key}, clientCAFile: {ca}}}
  upstream: {{caFile: {ca}, serverName: {server_name}, frontProxyCertFile: {fp_cert}, frontProxyKeyFile: {fp_key}}}
",
            backends = backends.join(", ")
        )
    };
    Ok(String::from(
        "apiVersion: apigate.dev/v1alpha1
kind: GatewayConfig
metadata: {name: e2e-rollout}
spec:
  listeners: [{name: https, address: \"127.0.0.1:0\"}]
  admin: {address: \"127.0.0.1:0\"}
  rollout: {enabled: true, bakeTime: 3s, gates: {minRequests: 20}}
",
    ) + &route("canary", CANARY, "apigate.dev/canary: \"true\"")
        + &route("other", OTHER, ""))
}

async fn phase(admin: std::net::SocketAddr) -> anyhow::Result<serde_json::Value> {
    let (status, body) = admin_get(admin, "/rollout").await?;
    ensure!(status == 200, "/rollout: {status} {body}");
    Ok(serde_json::from_str(&body)?)
}

/// Requests on both routes until `done` says the rollout reached its phase (30 s at
/// most); returns the failures per route.
async fn drive(
    admin: std::net::SocketAddr,
    canary: &H2Client,
    other: &H2Client,
    done: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<(u32, u32, serde_json::Value)> {
    let (mut canary_failed, mut other_failed) = (0, 0);
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        for _ in 0..5 {
            let ok = |r: &Result<apigate_test_support::client::Response, _>| matches!(r, Ok(r) if r.status == 200);
            if !ok(&canary.get("/api/v1/namespaces/default", &[]).await) {
                canary_failed += 1;
            }
            if !ok(&other.get("/api/v1/namespaces/default", &[]).await) {
                other_failed += 1;
            }
        }
        let status = phase(admin).await?;
        if done(&status) {
            return Ok((canary_failed, other_failed, status));
        }
        ensure!(Instant::now() < end, "rollout stuck: {status}");
    }
}

/// A revision with an upstream server name the replicas' certificates do not carry (a
/// typo: every request gets a 502) freezes on the canary route, the other route never fails, the canary serves again at once; aborted,
/// it stays withdrawn; then a good revision reaches both routes after the bake.
pub(crate) async fn a_bad_revision_freezes_on_the_canary_route(
    ctx: Arc<Ctx>,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("apigate.yaml");
    std::fs::write(&path, config(&ctx, GOOD_NAME, "leastRequest")?)?;
    let (snapshot, file) = apigate::server::FileConfig::load(&path, Duration::from_millis(100))
        .map_err(|e| anyhow::anyhow!("config: {e:?}"))?;
    let running = apigate::server::start(snapshot, Some(file)).await?;
    let result = async {
        let address = running.address().context("no listener")?;
        let admin = running.admin.context("no admin")?;
        let canary = H2Client::connect(address, &ctx.testbed.client_tls(Some("admin"), CANARY)?).await?;
        let other = H2Client::connect(address, &ctx.testbed.client_tls(Some("admin"), OTHER)?).await?;

        let written = Instant::now();
        std::fs::write(&path, config(&ctx, "kubernetes.wrong.svc", "leastRequest")?)?;
        let (canary_failed, other_failed, status) =
            drive(admin, &canary, &other, |s| s["phase"] == "frozen").await?;
        println!(
            "    bad revision frozen after {:?}: {canary_failed} canary requests failed, {other_failed} on the other route; {}",
            written.elapsed(),
            status["reason"]
        );
        ensure!(other_failed == 0, "the other route failed {other_failed} requests");
        ensure!(canary_failed > 0, "the canary never ran the bad revision");
        ensure!(
            canary.get("/api/v1/namespaces/default", &[]).await?.status == 200,
            "the canary is back on the stable revision"
        );
        apigate::admin::client::rollout(admin, Some("abort"), None).await?;
        ensure!(phase(admin).await?["phase"] == "idle");

        let written = Instant::now();
        std::fs::write(&path, config(&ctx, GOOD_NAME, "roundRobin")?)?;
        let (canary_failed, other_failed, status) = drive(admin, &canary, &other, |s| {
            s["phase"] == "idle" && s["stableRevision"].as_u64() > Some(1)
        })
        .await?;
        println!(
            "    good revision promoted after {:?} (bake 3 s), stable revision {}",
            written.elapsed(),
            status["stableRevision"]
        );
        ensure!(
            canary_failed == 0 && other_failed == 0,
            "{canary_failed} + {other_failed} requests failed during the good rollout"
        );
        anyhow::Ok(())
    }
    .await;
    running.shutdown(Duration::from_secs(5)).await;
    result
}
