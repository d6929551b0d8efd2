//! End-to-end scenarios through apigate against a real HA kube-apiserver (3 replicas,
//! one etcd, `--requestheader-*` front-proxy authentication, RBAC) and kubectl 1.20.
//!
//! Needs `tests/testbed/testbed.sh install` (the README's test command runs it).
//! Prints one line per scenario and a closing `N passed, N failed` line.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use apigate::demo::client::H2Client;
use apigate_e2e::{text, Gateway, Testbed, HOST};

struct Ctx {
    testbed: Testbed,
    gateway: Gateway,
}

type Scenario = fn(Arc<Ctx>) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

const SPOOF: [(&str, &str); 5] = [
    ("X-Remote-User", "admin"),
    ("X-Remote-Group", "system:masters"),
    ("X-Remote-Extra-Scopes", "all"),
    ("X-Remote-Uid", "0"),
    ("x-remote-group", "system:masters"),
];

fn kubectl_ok(ctx: &Ctx, context: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = ctx.gateway.kubectl(&ctx.testbed, context, args)?;
    let out = text(&output);
    ensure!(
        output.status.success(),
        "kubectl {args:?} as {context} failed: {out}"
    );
    Ok(out)
}

fn kubectl_denied(ctx: &Ctx, context: &str, args: &[&str], user: &str) -> anyhow::Result<()> {
    let output = ctx.gateway.kubectl(&ctx.testbed, context, args)?;
    let out = text(&output);
    ensure!(
        !output.status.success(),
        "kubectl {args:?} as {context} should be forbidden: {out}"
    );
    ensure!(
        out.contains(&format!("User \"{user}\" cannot")),
        "the API server should name {user:?}: {out}"
    );
    Ok(())
}

async fn client(ctx: &Ctx, user: Option<&str>) -> anyhow::Result<H2Client> {
    let tls = ctx.testbed.client_tls(user, HOST)?;
    Ok(H2Client::connect(ctx.gateway.address()?, &tls).await?)
}

/// kubectl as `context` through apigate: get, list, create and watch (configmaps, which
/// the testbed's RBAC lets group `devs` read, watch and create).
async fn kubectl_get_list_create_watch(ctx: &Ctx, context: &str) -> anyhow::Result<()> {
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
    let mut watch = Command::new(ctx.testbed.get("KUBECTL")?)
        .args(["--kubeconfig"])
        .arg(&ctx.gateway.kubeconfig)
        .args([
            "--context",
            context,
            "-n",
            "default",
            "get",
            "configmaps",
            "-w",
            "-o",
            "name",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = watch.stdout.take().context("watch stdout")?;
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // The initial list arrives first; then create the object the watch must report.
    let first = lines_rx.recv_timeout(Duration::from_secs(20));
    let created = kubectl_ok(
        ctx,
        context,
        &["-n", "default", "create", "configmap", &watched],
    );
    let mut seen = false;
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end && !seen {
        if let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(200)) {
            seen = line.contains(&format!("configmap/{watched}"));
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    ensure!(first.is_ok(), "kubectl -w printed nothing");
    created?;
    ensure!(seen, "the watch did not report configmap/{watched}");
    Ok(())
}

/// A client-certificate user (alice: CN alice, O devs + testers).
async fn kubectl_with_client_certificate(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    kubectl_get_list_create_watch(&ctx, "alice").await?;
    let out = kubectl_ok(&ctx, "admin", &["get", "namespaces", "-o", "name"])?;
    ensure!(out.contains("namespace/default"), "{out}");
    Ok(())
}

/// A bearer-token user (bob, group devs).
async fn kubectl_with_bearer_token(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    kubectl_get_list_create_watch(&ctx, "bob").await
}

/// Passthrough: kubectl's client certificate goes straight to kube-apiserver (no
/// front-proxy headers involved), certificate and token users alike.
async fn passthrough_with_kubectl(ctx: Arc<Ctx>) -> anyhow::Result<()> {
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
    let spliced: f64 = ctx
        .testbed
        .replicas()?
        .iter()
        .map(|r| {
            ctx.gateway.metric(&format!(
                "apigate_passthrough_connections_total{{backend=\"{r}\",route=\"e2e-passthrough/testbed-passthrough\"}}"
            ))
        })
        .sum();
    ensure!(
        spliced >= 3.0,
        "kubectl went through the passthrough route ({spliced} connections)"
    );
    Ok(())
}

/// The in-cluster CONNECT path carries kubectl traffic: a forwarder that speaks CONNECT
/// with X-Gardener-Destination (like the shoot's apiserver-proxy) in front of apigate.
async fn connect_path_with_kubectl(ctx: Arc<Ctx>) -> anyhow::Result<()> {
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

/// RBAC through apigate sees the real caller: allowed and forbidden actions for a
/// certificate user (alice, group devs) and a token user (bob, group devs).
async fn rbac_sees_the_caller(ctx: Arc<Ctx>) -> anyhow::Result<()> {
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
async fn spoofed_identity_headers_have_no_effect(ctx: Arc<Ctx>) -> anyhow::Result<()> {
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

/// 300 requests over ONE HTTP/2 connection land on all 3 replicas within ±15% of an
/// even share, counted by each replica's own apiserver_request_total.
async fn one_connection_spreads_over_all_replicas(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let labels = ["resource=\"namespaces\"", "verb=\"GET\""];
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
async fn watch_survives_while_requests_flow(ctx: Arc<Ctx>) -> anyhow::Result<()> {
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

/// A replica stopped (SIGTERM, graceful) mid-run fails no request: connect failures go
/// to another replica before anything is sent.
async fn stopped_replica_fails_no_request(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let admin = client(&ctx, Some("admin")).await?;
    let pid = *ctx
        .testbed
        .replica_pids()?
        .first()
        .context("no replica pid")?;
    let mut failures = Vec::new();
    for i in 0..400 {
        if i == 50 {
            let status = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()?;
            ensure!(status.success(), "kill {pid}");
        }
        match admin.get("/api/v1/namespaces/default", &[]).await {
            Ok(r) if r.status == 200 => {}
            Ok(r) => failures.push(format!(
                "#{i}: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            )),
            Err(e) => failures.push(format!("#{i}: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    ensure!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    Ok(())
}

fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        ("kubectl_with_client_certificate", |c| {
            Box::pin(kubectl_with_client_certificate(c))
        }),
        ("kubectl_with_bearer_token", |c| {
            Box::pin(kubectl_with_bearer_token(c))
        }),
        ("rbac_sees_the_caller", |c| {
            Box::pin(rbac_sees_the_caller(c))
        }),
        ("spoofed_identity_headers_have_no_effect", |c| {
            Box::pin(spoofed_identity_headers_have_no_effect(c))
        }),
        ("one_connection_spreads_over_all_replicas", |c| {
            Box::pin(one_connection_spreads_over_all_replicas(c))
        }),
        ("watch_survives_while_requests_flow", |c| {
            Box::pin(watch_survives_while_requests_flow(c))
        }),
        ("passthrough_with_kubectl", |c| {
            Box::pin(passthrough_with_kubectl(c))
        }),
        ("connect_path_with_kubectl", |c| {
            Box::pin(connect_path_with_kubectl(c))
        }),
        // Last: it stops a replica.
        ("stopped_replica_fails_no_request", |c| {
            Box::pin(stopped_replica_fails_no_request(c))
        }),
    ]
}

fn main() -> std::process::ExitCode {
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("APIGATE_LOG").unwrap_or_else(|_| "warn".into()))
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let (passed, failed) = runtime.block_on(async {
        println!("e2e: bringing up the testbed (etcd + 3 kube-apiserver replicas)");
        let testbed = match Testbed::up() {
            Ok(t) => t,
            Err(e) => {
                println!("e2e: {e:#}");
                return (0, 1);
            }
        };
        let gateway = match Gateway::start(&testbed).await {
            Ok(g) => g,
            Err(e) => {
                println!("e2e: starting apigate: {e:#}");
                return (0, 1);
            }
        };
        let ctx = Arc::new(Ctx { testbed, gateway });
        let (mut passed, mut failed) = (0, 0);
        for (name, scenario) in scenarios() {
            if filter.as_deref().is_some_and(|f| !name.contains(f)) {
                continue;
            }
            let started = Instant::now();
            let task = tokio::spawn(scenario(ctx.clone()));
            let outcome = match tokio::time::timeout(Duration::from_secs(180), task).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(e))) => Err(format!("{e:#}")),
                Ok(Err(join)) => Err(format!("panicked: {join}")),
                Err(_) => Err("timed out after 180 s".into()),
            };
            let secs = started.elapsed().as_secs_f64();
            match outcome {
                Ok(()) => {
                    passed += 1;
                    println!("test {name} ... ok ({secs:.1}s)");
                }
                Err(e) => {
                    failed += 1;
                    println!("test {name} ... FAILED ({secs:.1}s)\n    {e}");
                }
            }
        }
        if let Ok(mut ctx) = Arc::try_unwrap(ctx) {
            ctx.gateway.stop().await;
            drop(ctx); // Testbed::drop brings the testbed down.
        }
        (passed, failed)
    });
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
