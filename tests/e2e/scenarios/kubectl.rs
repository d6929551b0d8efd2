//! kubectl 1.20 through apigate's terminating route: a client-certificate user and a
//! bearer-token user get, list, create and watch.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};

use super::{kubectl_ok, Ctx};

/// A child process killed (and reaped) when dropped, also when a scenario fails or
/// is aborted half-way.
pub(crate) struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `kubectl ARGS` (a watch) through apigate as `context`, running until the returned
/// guard is dropped; its output lines arrive on the receiver.
pub(crate) fn kubectl_watch(
    ctx: &Ctx,
    context: &str,
    args: &[&str],
) -> anyhow::Result<(KillOnDrop, std::sync::mpsc::Receiver<String>)> {
    let mut watch = KillOnDrop(
        Command::new(ctx.testbed.get("KUBECTL")?)
            .args(["--kubeconfig"])
            .arg(&ctx.gateway.kubeconfig)
            .args(["--context", context])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let stdout = watch.0.stdout.take().context("watch stdout")?;
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    // Ends when kubectl's output closes (it exits, or the guard kills it).
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok((watch, lines_rx))
}

/// kubectl as `context` through apigate: get, list, create and watch (configmaps, which
/// the testbed's RBAC lets group `devs` read, watch and create).
pub(crate) async fn kubectl_get_list_create_watch(ctx: &Ctx, context: &str) -> anyhow::Result<()> {
    let name = format!("e2e-{context}");
    let watched = format!("e2e-{context}-watched");
    kubectl_ok(ctx, context, &["-n", "default", "get", "pods"])?;
    kubectl_ok(
        ctx,
        context,
        &[
            "-n",
            "default",
            "create",
            "configmap",
            &name,
            "--from-literal=k=v",
        ],
    )?;
    let out = kubectl_ok(
        ctx,
        context,
        &["-n", "default", "get", "configmaps", "-o", "name"],
    )?;
    ensure!(out.contains(&format!("configmap/{name}")), "{out}");
    let out = kubectl_ok(
        ctx,
        context,
        &[
            "-n",
            "default",
            "get",
            "configmap",
            &name,
            "-o",
            "jsonpath={.data.k}",
        ],
    )?;
    ensure!(out.trim() == "v", "{out}");

    // kubectl get -w through apigate sees an object created while it watches.
    let (watch, lines_rx) = kubectl_watch(
        ctx,
        context,
        &["-n", "default", "get", "configmaps", "-w", "-o", "name"],
    )?;
    // The initial list arrives first; then create the object the watch must report.
    let first = apigate_e2e::blocking(|| lines_rx.recv_timeout(Duration::from_secs(20)));
    let created = kubectl_ok(
        ctx,
        context,
        &["-n", "default", "create", "configmap", &watched],
    );
    let mut seen = false;
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end && !seen {
        if let Ok(line) =
            apigate_e2e::blocking(|| lines_rx.recv_timeout(Duration::from_millis(200)))
        {
            seen = line.contains(&format!("configmap/{watched}"));
        }
    }
    drop(watch);
    ensure!(first.is_ok(), "kubectl -w printed nothing");
    created?;
    ensure!(seen, "the watch did not report configmap/{watched}");
    Ok(())
}

/// A client-certificate user (alice: CN alice, O devs + testers).
pub(crate) async fn kubectl_with_client_certificate(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    kubectl_get_list_create_watch(&ctx, "alice").await?;
    let out = kubectl_ok(&ctx, "admin", &["get", "namespaces", "-o", "name"])?;
    ensure!(out.contains("namespace/default"), "{out}");
    Ok(())
}

/// A bearer-token user (bob, group devs).
pub(crate) async fn kubectl_with_bearer_token(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    kubectl_get_list_create_watch(&ctx, "bob").await
}
