//! Faults under load on the real replicas. A kube-apiserver replica that gets SIGTERM
//! while a client-go-like mix runs through apigate fails no request, and apigate stops
//! sending it new requests within one probe interval. apigate's front-proxy identity
//! rotated while the mix runs and a kubectl watch is open fails no request, meets no
//! 401, and the watch keeps delivering.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use apigate_e2e::{admin_get, pid_alive, signal, HOST};
use apigate_loadtest::cli::{Cli, Command};
use apigate_loadtest::report::RunReport;
use apigate_loadtest::runner;
use apigate_test_support::metrics::Metrics;
use clap::Parser;

use super::{Ctx, ROUTE};

/// apigate's default probe interval (the e2e configuration sets none).
const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Pods the mix GETs and PATCHes (`pod-0` .. `pod-9`).
const OBJECTS: u32 = 10;

/// Requests through apigate, per backend, by its metrics.
fn served(metrics: &Metrics, backend: &str) -> f64 {
    metrics.sum(
        "apigate_requests_total",
        &[("route", ROUTE), ("backend", backend)],
    )
}

/// The health state `/backends` shows for `backend`.
async fn backend_state(ctx: &Ctx, backend: &str) -> anyhow::Result<String> {
    let admin = ctx
        .gateway
        .running
        .as_ref()
        .and_then(|r| r.admin)
        .context("apigate has no admin listener")?;
    let (status, body) = admin_get(admin, "/backends").await?;
    ensure!(status == 200, "/backends: status {status}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&body)?;
    Ok(list
        .iter()
        .find(|b| b["address"] == backend)
        .and_then(|b| b["state"].as_str())
        .unwrap_or("absent")
        .to_string())
}

/// The objects the mix reads and patches.
fn create_pods(ctx: &Ctx) -> anyhow::Result<()> {
    let items: Vec<String> = (0..OBJECTS)
        .map(|i| {
            format!(
                r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"pod-{i}"}},"spec":{{"automountServiceAccountToken":false,"containers":[{{"name":"c","image":"registry.invalid/pause:3"}}]}}}}"#
            )
        })
        .collect();
    let list = format!(
        r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#,
        items.join(",")
    );
    let output = ctx.gateway.kubectl_input(
        &ctx.testbed,
        "admin",
        &["-n", "default", "apply", "-f", "-"],
        Some(list.as_bytes()),
    )?;
    ensure!(
        output.status.success(),
        "creating the pods failed: {}",
        apigate_e2e::text(&output)
    );
    Ok(())
}

/// `apigate-loadtest run` through apigate as the admin (client certificate): GETs,
/// LISTs, POSTs and PATCHes of pods, and one watch per client, for `duration`.
fn load_plan(ctx: &Ctx, duration: Duration) -> anyhow::Result<runner::RunPlan> {
    let pki = |f: &str| ctx.testbed.pki(f).map(|p| p.display().to_string());
    let args = [
        "apigate-loadtest".to_string(),
        "run".into(),
        "--target".into(),
        format!("https://{}", ctx.gateway.address()?),
        "--ca".into(),
        pki("ca.crt")?,
        "--sni".into(),
        HOST.into(),
        "--cert".into(),
        pki("admin.crt")?,
        "--key".into(),
        pki("admin.key")?,
        "--clients".into(),
        "4".into(),
        "--rate".into(),
        "120".into(),
        "--warmup".into(),
        "1s".into(),
        "--duration".into(),
        format!("{}s", duration.as_secs()),
        "--mix".into(),
        "get=40,list=20,create=20,patch=20".into(),
        "--list-size".into(),
        "20".into(),
        "--objects".into(),
        OBJECTS.to_string(),
        "--body-bytes".into(),
        "512".into(),
        "--watches-per-client".into(),
        "1".into(),
        "--timeout".into(),
        "30s".into(),
        "--grace".into(),
        "30s".into(),
        "--quiet".into(),
    ];
    let cli = Cli::try_parse_from(args)?;
    let Command::Run(run) = cli.command else {
        anyhow::bail!("not a run command");
    };
    let scenario = Arc::new(run.common.load.scenario()?);
    Ok(run
        .common
        .plan("apigate".into(), run.target.clone(), scenario))
}

/// Run `plan` on a runtime of its own, as the apigate-loadtest binary runs it: the
/// scenario's own polling (and the in-process gateway) cannot delay its timetable.
fn start_load(plan: runner::RunPlan) -> tokio::task::JoinHandle<anyhow::Result<RunReport>> {
    tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        anyhow::Ok(runtime.block_on(runner::run(&plan))?)
    })
}

/// The report of a load [`start_load`] started, once it ends (90 s at most).
async fn finish_load(
    load: tokio::task::JoinHandle<anyhow::Result<RunReport>>,
) -> anyhow::Result<RunReport> {
    tokio::time::timeout(Duration::from_secs(90), load)
        .await
        .context("the load did not end within 90 s")??
}

/// No request and no watch of the load failed.
fn no_failure(report: &RunReport) -> anyhow::Result<()> {
    let requests = &report.requests;
    ensure!(
        requests.errors == 0,
        "{} of {} requests failed: {:?} {:?}",
        requests.errors,
        requests.ok + requests.errors,
        report.errors,
        report.error_examples
    );
    ensure!(
        report.watches.errors.is_empty(),
        "watches failed: {:?}",
        report.watches.errors
    );
    Ok(())
}

/// A replica stopped gracefully (SIGTERM; the testbed runs kube-apiserver with
/// `--shutdown-delay-duration=2s`) while `apigate-loadtest` runs a client-go-like mix
/// (get, list, create, patch, watches) fails no request. Its `/readyz` fails with the
/// `shutdown` check from the SIGTERM on; one probe drains it, so new requests go to the
/// other replicas within one probe interval, while the requests it has finish.
pub(crate) async fn graceful_replica_shutdown_under_load(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    // The last replica: the Kubernetes scenario restarts the first (new pid).
    let victim = *ctx.testbed.replicas()?.last().context("no replica")?;
    let victim_label = victim.to_string();
    let pid = *ctx
        .testbed
        .replica_pids()?
        .last()
        .context("no replica pid")?;
    ensure!(
        pid_alive(pid),
        "replica {victim} (pid {pid}) is not running"
    );
    create_pods(&ctx)?;
    let plan = load_plan(&ctx, Duration::from_secs(12))?;
    let load = start_load(plan);
    let result = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        ensure!(backend_state(&ctx, &victim_label).await? == "healthy");
        // SIGTERM right after apigate reports requests in flight to the victim.
        let mut sampled = None;
        for _ in 0..100 {
            let metrics = ctx.gateway.metrics().await?;
            let on_victim = metrics.sum(
                "apigate_requests_in_flight",
                &[("route", ROUTE), ("backend", &victim_label)],
            );
            if on_victim > 0.0 {
                sampled = Some((metrics, on_victim));
                break;
            }
        }
        let (before_kill, on_victim) = sampled.with_context(|| {
            format!("apigate never reported a request in flight to {victim} (100 samples)")
        })?;
        signal(pid, "TERM")?;
        let killed = Instant::now();
        // Its /readyz fails now; one probe takes it out of the rotation.
        let mut moved = None;
        while killed.elapsed() < Duration::from_secs(10) {
            let state = backend_state(&ctx, &victim_label).await?;
            if state != "healthy" {
                moved = Some((killed.elapsed(), state, ctx.gateway.metrics().await?));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (moved_after, state, at_drain) =
            moved.with_context(|| format!("{victim} stayed healthy for 10 s after SIGTERM"))?;
        while pid_alive(pid) {
            ensure!(
                killed.elapsed() < Duration::from_secs(30),
                "replica {victim} (pid {pid}) still running 30 s after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let exited = killed.elapsed();
        let at_exit = ctx.gateway.metrics().await?;
        anyhow::Ok((
            before_kill,
            on_victim,
            moved_after,
            state,
            at_drain,
            exited,
            at_exit,
        ))
    }
    .await;
    let report = finish_load(load).await?;
    let (before_kill, on_victim, moved_after, state, at_drain, exited, at_exit) = result?;
    let during_shutdown = served(&at_exit, &victim_label) - served(&before_kill, &victim_label);
    let after_drain = served(&at_exit, &victim_label) - served(&at_drain, &victim_label);
    let in_flight_at_drain = at_drain.sum(
        "apigate_requests_in_flight",
        &[("route", ROUTE), ("backend", &victim_label)],
    );
    let requests = &report.requests;
    println!(
        "    {} requests ({:?}), {} watches opened, {} ended by a replica; SIGTERM with {on_victim} in flight on {victim}; \
         {state} after {:.2} s (probe interval {} s); it served {during_shutdown} while shutting down \
         ({after_drain} after the drain, {in_flight_at_drain} in flight then) and exited after {:.1} s",
        requests.ok + requests.errors,
        requests.by_op,
        report.watches.opened,
        report.watches.ended_early,
        moved_after.as_secs_f64(),
        PROBE_INTERVAL.as_secs(),
        exited.as_secs_f64()
    );
    no_failure(&report)?;
    ensure!(state == "draining", "{victim} is {state}, not draining");
    // One probe interval (+10% jitter), and the polling of /backends.
    ensure!(
        moved_after <= PROBE_INTERVAL.mul_f64(1.1) + Duration::from_millis(500),
        "{victim} left the rotation {:.2} s after SIGTERM, more than one probe interval",
        moved_after.as_secs_f64()
    );
    // After the drain, only what was in flight then may still complete there.
    ensure!(
        after_drain <= in_flight_at_drain,
        "{victim} got {after_drain} requests after it drained ({in_flight_at_drain} were in flight)"
    );
    ensure!(
        during_shutdown > 0.0,
        "{victim} served no request between its SIGTERM and its exit"
    );
    Ok(())
}

/// apigate's front-proxy certificate and key replaced in their files (a new key, from
/// the front-proxy CA) while `apigate-loadtest` runs its client-go-like mix and
/// `kubectl get pods --watch` stays open: no request fails, no replica answers 401, and
/// the watch prints pods the load creates after the rotation.
pub(crate) async fn front_proxy_rotation_under_load_with_a_kubectl_watch(
    ctx: Arc<Ctx>,
) -> anyhow::Result<()> {
    create_pods(&ctx)?;
    let (mut watch, lines_rx) =
        super::kubectl::kubectl_watch(&ctx, "admin", &["-n", "default", "get", "pods", "--watch"])?;
    let plan = load_plan(&ctx, Duration::from_secs(12))?;
    let load = start_load(plan);
    let rotated = async {
        tokio::time::sleep(Duration::from_secs(4)).await;
        let revision = |m: &Metrics| m.sum("apigate_config_revision", &[]);
        let before = revision(&ctx.gateway.metrics().await?);
        let dir = tempfile::tempdir()?;
        let (cert, key) = ctx.testbed.issue_cert_by(
            "front-proxy-ca",
            dir.path(),
            "front-proxy-rotated",
            "/CN=apigate-front-proxy",
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
        )?;
        // Each file replaced whole (rename); the key first, so a configuration read
        // between the two is refused (key and certificate differ) and the last good one
        // keeps serving.
        let (live_cert, live_key) = ctx.gateway.front_proxy_files();
        for (from, to) in [(&key, &live_key), (&cert, &live_cert)] {
            let staged = to.with_extension("staged");
            std::fs::copy(from, &staged)?;
            std::fs::rename(&staged, to)?;
        }
        let started = Instant::now();
        loop {
            let metrics = ctx.gateway.metrics().await?;
            if revision(&metrics) > before {
                break;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(10),
                "the rotated front-proxy identity was not applied within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::Ok(())
    }
    .await;
    // What kubectl printed until the rotation was applied (the receiver stays out of
    // the async block: it is not `Sync`).
    let lines_at_rotation = lines_rx.try_iter().count();
    let report = finish_load(load).await?;
    rotated?;
    let requests = &report.requests;
    let watched = lines_at_rotation + lines_rx.try_iter().count();
    println!(
        "    {} requests ({:?}) through the rotation; kubectl --watch printed {lines_at_rotation} lines before it and {} after",
        requests.ok + requests.errors,
        requests.by_op,
        watched - lines_at_rotation
    );
    no_failure(&report)?;
    ensure!(
        watch.0.try_wait()?.is_none(),
        "kubectl --watch ended during the rotation"
    );
    ensure!(
        watched > lines_at_rotation,
        "kubectl --watch printed nothing after the rotation, though the load created pods"
    );
    Ok(())
}
