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
use apigate_e2e::{kube, text, Gateway, Testbed, HOST};
use apigate_test_support::client::H2Client;

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
    // The last replica: the Kubernetes scenario restarts the first (new pid).
    let pid = *ctx
        .testbed
        .replica_pids()?
        .last()
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

/// Status conditions of a route as `type=status/reason: message` lines.
fn conditions(
    ctx: &Ctx,
    namespace: &str,
    name: &str,
) -> anyhow::Result<(String, serde_json::Value)> {
    let json = kube::admin_ok(
        &ctx.testbed,
        &["-n", namespace, "get", "apiserverroute", name, "-o", "json"],
        None,
    )?;
    let object: serde_json::Value = serde_json::from_str(&json)?;
    let lines = object["status"]["conditions"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|c| {
                    format!(
                        "{}={}/{}: {}",
                        c["type"].as_str().unwrap_or_default(),
                        c["status"].as_str().unwrap_or_default(),
                        c["reason"].as_str().unwrap_or_default(),
                        c["message"].as_str().unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    Ok((lines, object))
}

/// Requests through the Kubernetes-configured apigate, per backend, by its metrics.
async fn spread(
    gateway: &kube::KubeGateway,
    testbed: &Testbed,
    n: usize,
) -> anyhow::Result<Vec<f64>> {
    let replicas = testbed.replicas()?;
    let before: Vec<f64> = replicas
        .iter()
        .map(|r| {
            gateway.metric_sum(
                "apigate_requests_total",
                &[kube::ROUTE, &format!("backend=\"{r}\"")],
            )
        })
        .collect();
    let tls = testbed.client_tls(Some("admin"), kube::K8S_HOST)?;
    let client = H2Client::connect(gateway.address()?, &tls).await?;
    for i in 0..n {
        let response = client.get("/api/v1/namespaces/default", &[]).await?;
        ensure!(response.status == 200, "request {i}: {}", response.status);
    }
    Ok(replicas
        .iter()
        .zip(before)
        .map(|(r, b)| {
            gateway.metric_sum(
                "apigate_requests_total",
                &[kube::ROUTE, &format!("backend=\"{r}\"")],
            ) - b
        })
        .collect())
}

/// The Kubernetes source against the real API server: routes, EndpointSlices, Secrets
/// and the Gardener acl Extension configure apigate; status, Events, rotation,
/// invalid objects and an API-server restart behave as operators need.
async fn kubernetes_source(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    use kube::{admin_ok, apply, eventually, KubeGateway, K8S_HOST, NAMESPACE};
    let testbed = &ctx.testbed;
    let replicas = testbed.replicas()?;
    kube::install_crds(testbed).context("installing CRDs")?;
    kube::create_backing_objects(testbed, NAMESPACE).context("backing objects")?;
    for (i, replica) in replicas.iter().enumerate() {
        apply(testbed, &kube::slice_yaml(i, *replica, true))?;
    }
    apply(testbed, &kube::extension_yaml("127.0.0.0/8"))?;
    apply(
        testbed,
        &kube::route_yaml(NAMESPACE, "kube-apiserver", "serving"),
    )?;

    let (mut gateway, ready_before_sync) = KubeGateway::start(testbed).await?;
    let result = async {
        ensure!(
            !ready_before_sync,
            "/readyz was ready before the first sync"
        );
        let readiness = gateway.readiness()?;
        let synced = eventually(
            "first sync",
            Duration::from_secs(60),
            || Ok(readiness.get()),
        )
        .await?;
        println!(
            "    initial sync + first snapshot: {} ms",
            synced.as_millis()
        );

        // kubectl through apigate reaches every replica.
        let out = gateway.kubectl(testbed, &["get", "namespaces", NAMESPACE])?;
        ensure!(
            out.status.success(),
            "kubectl through apigate: {}",
            text(&out)
        );
        let counts = spread(&gateway, testbed, 60).await?;
        ensure!(
            counts.iter().all(|c| *c >= 10.0),
            "requests per replica: {counts:?}"
        );

        // Status from the Lease holder.
        eventually(
            "status Accepted=True, 3 endpoints",
            Duration::from_secs(20),
            || {
                let (lines, object) = conditions(&ctx, NAMESPACE, "kube-apiserver")?;
                Ok(lines.contains("Accepted=True/Accepted")
                    && lines.contains("BackendsReady=True/EndpointsReady: 3 ready endpoint(s)")
                    && object["status"]["observedGeneration"] == object["metadata"]["generation"])
            },
        )
        .await?;

        // The status came from the Lease holder.
        let holder = admin_ok(
            testbed,
            &[
                "-n",
                "default",
                "get",
                "lease",
                "apigate-e2e",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
            None,
        )?;
        ensure!(holder.trim() == "e2e-0", "lease holder: {holder}");

        // The acl Extension is the allowlist: narrowing it denies us (127.0.0.1).
        let ca = std::fs::read_to_string(testbed.pki("ca.crt")?)?;
        let address = gateway.address()?;
        ensure!(
            kube::presented_certificate(address, K8S_HOST, &ca)
                .await
                .is_ok(),
            "allowed before the edit"
        );
        apply(testbed, &kube::extension_yaml("10.0.0.0/8"))?;
        let denied = kube::until_handshake(
            address,
            &ca,
            false,
            Duration::from_secs(10),
            "denied after the acl edit",
        )
        .await?;
        println!(
            "    acl Extension edit → address denied: {} ms",
            denied.as_millis()
        );
        apply(testbed, &kube::extension_yaml("127.0.0.0/8"))?;
        kube::until_handshake(
            address,
            &ca,
            true,
            Duration::from_secs(10),
            "allowed again after restoring the acl",
        )
        .await?;

        // Endpoints: a terminating replica gets no new requests; back when ready.
        apply(testbed, &kube::slice_yaml(2, replicas[2], false))?;
        eventually(
            "BackendsReady shows 2 ready",
            Duration::from_secs(20),
            || {
                Ok(conditions(&ctx, NAMESPACE, "kube-apiserver")?
                    .0
                    .contains("2 ready endpoint(s), 1 terminating or not ready"))
            },
        )
        .await?;
        let counts = spread(&gateway, testbed, 40).await?;
        ensure!(
            counts[2] == 0.0 && counts[0] > 0.0 && counts[1] > 0.0,
            "scaled down to 2: {counts:?}"
        );
        apply(testbed, &kube::slice_yaml(2, replicas[2], true))?;
        eventually("3 ready again", Duration::from_secs(20), || {
            Ok(conditions(&ctx, NAMESPACE, "kube-apiserver")?
                .0
                .contains("3 ready endpoint(s)"))
        })
        .await?;
        let counts = spread(&gateway, testbed, 60).await?;
        ensure!(
            counts.iter().all(|c| *c > 0.0),
            "scaled up to 3: {counts:?}"
        );

        // Rotation: the new serving certificate is presented on new handshakes.
        let (cert, key) = kube::rotated_serving_cert(testbed, gateway.dir.path())?;
        let rotated = kube::certificate_der(&cert)?;
        ensure!(
            kube::presented_certificate(address, K8S_HOST, &ca).await? != rotated,
            "rotated before rotation"
        );
        let secret = admin_ok(
            testbed,
            &[
                "-n",
                NAMESPACE,
                "create",
                "secret",
                "tls",
                "serving",
                "--dry-run=client",
                "-o",
                "yaml",
                &format!("--cert={}", cert.display()),
                &format!("--key={}", key.display()),
            ],
            None,
        )?;
        apply(testbed, &secret)?;
        let started = Instant::now();
        while kube::presented_certificate(address, K8S_HOST, &ca)
            .await
            .ok()
            != Some(rotated.clone())
        {
            ensure!(
                started.elapsed() < Duration::from_secs(15),
                "rotated certificate not presented after 15 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "    Secret rotation → new certificate served: {} ms",
            started.elapsed().as_millis()
        );
        let out = gateway.kubectl(testbed, &["get", "namespaces", NAMESPACE])?;
        ensure!(
            out.status.success(),
            "kubectl after rotation: {}",
            text(&out)
        );

        // Invalid objects: status + Event, the last good version keeps serving.
        apply(
            testbed,
            &kube::route_yaml(NAMESPACE, "kube-apiserver", "no-such-secret"),
        )?;
        eventually(
            "Accepted=False for a missing Secret",
            Duration::from_secs(20),
            || {
                let (lines, _) = conditions(&ctx, NAMESPACE, "kube-apiserver")?;
                Ok(lines.contains("Accepted=False/InvalidSecretRef")
                    && lines.contains("last accepted version keeps serving"))
            },
        )
        .await?;
        let out = gateway.kubectl(testbed, &["get", "namespaces", NAMESPACE])?;
        ensure!(
            out.status.success(),
            "the last good version stopped serving: {}",
            text(&out)
        );
        eventually(
            "a Warning Event for the rejection",
            Duration::from_secs(20),
            || {
                let events = admin_ok(
                    testbed,
                    &["-n", NAMESPACE, "get", "events", "-o", "json"],
                    None,
                )?;
                Ok(events.contains("InvalidSecretRef") && events.contains("no-such-secret"))
            },
        )
        .await?;
        apply(testbed, &kube::extension_yaml("not-a-cidr"))?;
        apply(
            testbed,
            &kube::route_yaml(NAMESPACE, "kube-apiserver", "serving"),
        )?;
        eventually(
            "Accepted=False for a malformed acl providerConfig",
            Duration::from_secs(20),
            || {
                Ok(conditions(&ctx, NAMESPACE, "kube-apiserver")?
                    .0
                    .contains("Accepted=False/InvalidAcl"))
            },
        )
        .await?;
        ensure!(
            gateway.metric_sum("apigate_kubernetes_routes_rejected", &["InvalidAcl"]) >= 1.0,
            "rejection metric"
        );
        let out = gateway.kubectl(testbed, &["get", "namespaces", NAMESPACE])?;
        ensure!(
            out.status.success(),
            "serving stopped on a malformed acl: {}",
            text(&out)
        );
        apply(testbed, &kube::extension_yaml("127.0.0.0/8"))?;

        // A newer route in another namespace claiming the hostname loses.
        kube::create_backing_objects(testbed, "shoot--e2e--other")?;
        apply(
            testbed,
            &kube::route_yaml("shoot--e2e--other", "kube-apiserver", "serving"),
        )?;
        eventually(
            "HostnameConflict on the newer route",
            Duration::from_secs(20),
            || {
                Ok(conditions(&ctx, "shoot--e2e--other", "kube-apiserver")?
                    .0
                    .contains("Accepted=False/HostnameConflict"))
            },
        )
        .await?;
        eventually("the older route accepted", Duration::from_secs(20), || {
            Ok(conditions(&ctx, NAMESPACE, "kube-apiserver")?
                .0
                .contains("Accepted=True"))
        })
        .await?;

        // Restart of the seed's kube-apiserver (the replica apigate watches through):
        // the configuration keeps serving, the watches resume.
        tokio::task::block_in_place(|| {
            restart_replica(testbed, 0, || {
                // Down: apigate still serves kubectl through the other replicas.
                let out = gateway.kubectl(testbed, &["get", "namespaces", NAMESPACE])?;
                ensure!(
                    out.status.success(),
                    "serving while the seed API server is down: {}",
                    text(&out)
                );
                Ok(())
            })
        })?;
        admin_ok(
            testbed,
            &[
                "-n",
                "shoot--e2e--other",
                "delete",
                "apiserverroute",
                "kube-apiserver",
            ],
            None,
        )?;
        apply(testbed, &kube::extension_yaml("10.0.0.0/8"))?;
        kube::until_handshake(
            address,
            &ca,
            false,
            Duration::from_secs(60),
            "watches resumed after the restart (acl edit applied)",
        )
        .await?;
        apply(testbed, &kube::extension_yaml("127.0.0.0/8"))?;
        kube::until_handshake(
            address,
            &ca,
            true,
            Duration::from_secs(20),
            "allowed after the restart",
        )
        .await?;

        // Deleting the route refuses its SNI.
        admin_ok(
            testbed,
            &[
                "-n",
                NAMESPACE,
                "delete",
                "apiserverroute",
                "kube-apiserver",
            ],
            None,
        )?;
        kube::until_handshake(
            address,
            &ca,
            false,
            Duration::from_secs(20),
            "SNI refused after deletion",
        )
        .await?;
        let out = gateway.kubectl(testbed, &["get", "namespaces"])?;
        ensure!(!out.status.success(), "kubectl still served after deletion");
        Ok(())
    }
    .await;
    gateway.stop().await;
    result
}

/// Stop replica `index` (SIGKILL), run `while_down`, start it again with the same
/// command line and wait until it answers. The new pid is recorded so that
/// `testbed.sh down` stops it.
fn restart_replica(
    testbed: &Testbed,
    index: usize,
    while_down: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let pid = *testbed
        .replica_pids()?
        .get(index)
        .context("no such replica")?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let (program, rest) = args.split_first().context("empty command line")?;
    ensure!(
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()?
            .success(),
        "kill {pid}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let down = while_down();
    let log = std::fs::File::create(testbed.dir.path().join("logs/apiserver-restarted.log"))?;
    let child = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let pids = testbed.dir.path().join("pids");
    let mut recorded = std::fs::read_to_string(&pids).unwrap_or_default();
    recorded.push_str(&format!("{}\n", child.id()));
    std::fs::write(&pids, recorded)?;
    down?;
    let replica = testbed.replicas()?[index];
    let started = Instant::now();
    while std::net::TcpStream::connect(replica).is_err() {
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "replica {index} did not come back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Listening is not serving yet; wait for its /readyz through kubectl.
    let started = Instant::now();
    while !kube::admin(testbed, &["get", "--raw", "/readyz"], None)?
        .status
        .success()
    {
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "replica {index} not ready"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}

/// The manifests are accepted by a real API server (`kubectl apply --dry-run=server`).
async fn manifests_apply_with_server_dry_run(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let testbed = &ctx.testbed;
    kube::install_crds(testbed)?;
    // Namespaces must exist for a server-side dry run of the objects inside them.
    for namespace in ["apigate-system", "shoot--dev--example"] {
        let out = kube::admin(testbed, &["create", "namespace", namespace], None)?;
        ensure!(
            out.status.success() || text(&out).contains("AlreadyExists"),
            "{}",
            text(&out)
        );
    }
    let rendered = kube::admin_ok(
        testbed,
        &["kustomize", &kube::manifests().display().to_string()],
        None,
    )?;
    // kube-apiserver 1.20 predates policy/v1 (1.21); its PodDisruptionBudget schema is
    // the same in policy/v1beta1, which is what the testbed can check.
    let rendered = rendered.replace("apiVersion: policy/v1\n", "apiVersion: policy/v1beta1\n");
    let out = kube::admin_ok(
        testbed,
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&rendered),
    )?;
    for kind in [
        "deployment.apps/apigate",
        "service/apigate",
        "service/apigate-metrics",
        "clusterrole.rbac.authorization.k8s.io/apigate",
        "poddisruptionbudget.policy/apigate",
        "serviceaccount/apigate",
    ] {
        ensure!(out.contains(kind), "{kind} missing from the dry run: {out}");
    }
    for example in ["route.yaml", "acl-extension.yaml"] {
        let path = kube::manifests().join("examples").join(example);
        kube::admin_ok(
            testbed,
            &[
                "apply",
                "--dry-run=server",
                "-f",
                &path.display().to_string(),
            ],
            None,
        )?;
    }
    Ok(())
}

fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        ("kubernetes_source", |c| Box::pin(kubernetes_source(c))),
        ("manifests_apply_with_server_dry_run", |c| {
            Box::pin(manifests_apply_with_server_dry_run(c))
        }),
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
