//! Kubernetes source at scale, on the real testbed: initial sync + compile time and
//! resident memory for N routes × 3 endpoints (+ one serving Secret per route and one
//! CA Secret per namespace; headless Services, as the testbed's service IP range is
//! small), then the time from an object change to the new snapshot
//! being active (p50/p99).
//!
//! `cargo bench -p apigate-e2e --bench kube-scale -- [ROUTES] [CHANGES] [passthrough] [probes]`
//! (defaults 5000 and 100; `passthrough` routes reference no Secrets; `probes` keeps
//! the default active health checks on, which here dial 3 × ROUTES unreachable
//! addresses every 2 s: off by default, so that the figures measure the source).
//! Needs `tests/testbed/testbed.sh install`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use apigate_control::source::kubernetes::{self as source, Options, Report};
use apigate_e2e::{kube as testkube, Testbed};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};

/// The apigate binary's allocator, so that resident memory is what a deployment sees.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PER_NAMESPACE: usize = 50;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn create_objects(
    client: kube::Client,
    testbed: &Testbed,
    routes: usize,
    passthrough: bool,
) -> anyhow::Result<()> {
    let pki = |f: &str| std::fs::read(testbed.pki(f)?).context(f.to_string());
    let (cert, key, ca) = (pki("apiserver.crt")?, pki("apiserver.key")?, pki("ca.crt")?);
    let replicas = testbed.replicas()?;
    let namespaces = routes.div_ceil(PER_NAMESPACE);
    let slices = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("discovery.k8s.io", "v1beta1", "EndpointSlice"),
        "endpointslices",
    );
    let route_resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apigate.dev", "v1alpha1", "ApiServerRoute"),
        "apiserverroutes",
    );
    let pp = PostParams::default();
    for n in 0..namespaces {
        let ns = format!("bench-{n}");
        let object: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?;
        let _ = Api::<Namespace>::all(client.clone())
            .create(&pp, &object)
            .await;
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ca", "namespace": ns},
            "data": {"ca.crt": base64(&ca)}
        }))?;
        let _ = Api::<Secret>::namespaced(client.clone(), &ns)
            .create(&pp, &secret)
            .await;
    }
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(0..routes)
        .map(|i| {
            let client = client.clone();
            let (cert, key) = (cert.clone(), key.clone());
            let (slices, route_resource) = (slices.clone(), route_resource.clone());
            let replicas = replicas.clone();
            async move {
                let ns = format!("bench-{}", i / PER_NAMESPACE);
                let name = format!("r{i}");
                let pp = PostParams::default();
                let service: Service = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"clusterIP": "None", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}
                }))?;
                Api::<Service>::namespaced(client.clone(), &ns).create(&pp, &service).await?;
                let endpoints: Vec<_> = (0..3)
                    .map(|e| serde_json::json!({"addresses": [format!("10.{}.{}.{}", i / 250 % 250, i % 250, e + 1)], "conditions": {"ready": true}}))
                    .collect();
                let slice: DynamicObject = serde_json::from_value(serde_json::json!({
                    "apiVersion": "discovery.k8s.io/v1beta1", "kind": "EndpointSlice",
                    "metadata": {"name": format!("{name}-a"), "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
                    "addressType": "IPv4",
                    "ports": [{"name": "https", "port": replicas[0].port(), "protocol": "TCP"}],
                    "endpoints": endpoints,
                }))?;
                Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &slices).create(&pp, &slice).await?;
                let secret: Secret = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("{name}-tls"), "namespace": ns},
                    "type": "kubernetes.io/tls",
                    "data": {"tls.crt": base64(&cert), "tls.key": base64(&key)}
                }))?;
                Api::<Secret>::namespaced(client.clone(), &ns).create(&pp, &secret).await?;
                let spec = if passthrough {
                    serde_json::json!({
                        "hostnames": [format!("{name}.{ns}.example.com")],
                        "mode": "passthrough",
                        "backendRef": {"service": name, "port": 443},
                    })
                } else {
                    serde_json::json!({
                        "hostnames": [format!("{name}.{ns}.example.com")],
                        "backendRef": {"service": name, "port": 443},
                        "tls": {"secretName": format!("{name}-tls")},
                        "upstream": {"ca": {"name": "ca"}, "serverName": "kubernetes.default.svc"}
                    })
                };
                let route: DynamicObject = serde_json::from_value(serde_json::json!({
                    "apiVersion": "apigate.dev/v1alpha1", "kind": "ApiServerRoute",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": spec,
                }))?;
                Api::<DynamicObject>::namespaced_with(client, &ns, &route_resource).create(&pp, &route).await?;
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for r in results {
        r?;
    }
    println!(
        "created {routes} routes, {routes} Services, {routes} EndpointSlices, {} Secrets in {:.1} s",
        routes + namespaces,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn bench(
    testbed: &Testbed,
    routes: usize,
    changes: usize,
    passthrough: bool,
    probes: bool,
) -> anyhow::Result<()> {
    testkube::install_crds(testbed)?;
    let kubeconfig = std::path::PathBuf::from(testbed.get("KUBECONFIG_ADMIN")?);
    let client = apigate::kubernetes::client(Some(&kubeconfig)).await?;
    create_objects(client.clone(), testbed, routes, passthrough).await?;

    let gateway = format!(
        "apiVersion: apigate.dev/v1alpha1\nkind: GatewayConfig\nmetadata: {{name: bench}}\nspec:\n  listeners: [{{name: https, address: \"127.0.0.1:0\"}}]\n  defaults: {{health: {{enabled: {probes}}}}}\n"
    );
    println!(
        "active health checks: {}",
        if probes { "on" } else { "off" }
    );
    let base = apigate_control::source::parse_documents(&gateway, "bench")
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let snapshot = apigate_control::compile(&apigate_control::source::Inputs {
        objects: base.clone(),
        ..Default::default()
    })
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let base_inputs = apigate_control::source::Inputs {
        objects: base.clone(),
        ..Default::default()
    };
    let running = apigate::server::start_with(
        snapshot,
        apigate::server::Source::Kubernetes {
            base: base_inputs,
            record: None,
        },
        false,
    )
    .await?;
    let state = running.state.clone();
    let rss_before = rss_kib();
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<(Duration, usize)>();
    let first_tx = std::sync::Mutex::new(Some(first_tx));
    let installer = apigate::kubernetes::installer(
        running.rollout.clone().context("no rollout controller")?,
        Some(running.readiness.clone()),
    );
    let report = move |report: Report| {
        if let Report::Update(update) = &report {
            if update.first {
                if let Some(tx) = first_tx.lock().ok().and_then(|mut t| t.take()) {
                    let _ = tx.send((update.compile_time, update.snapshot.routes.len()));
                }
            }
        }
        installer(report);
    };
    let options = Options {
        route_selector: None,
        debounce: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
        lease: None,
        controller: "apigate.dev/apigate".into(),
        instance: "bench".into(),
        rediscovery: Duration::from_secs(30),
        data_plane: None,
        leadership: None,
    };
    let started = Instant::now();
    let source_task = tokio::spawn(source::run(
        client.clone(),
        apigate_control::source::Inputs {
            objects: base,
            ..Default::default()
        },
        options,
        report,
    ));
    let (compile_time, served) = tokio::time::timeout(Duration::from_secs(600), first_rx)
        .await
        .context("no initial sync within 600 s")??;
    let sync = started.elapsed();
    let rss_after = rss_kib();
    println!(
        "initial sync + first snapshot: {:.2} s (of which compile {:.2} s); routes served: {served}",
        sync.as_secs_f64(),
        compile_time.as_secs_f64()
    );
    println!(
        "resident memory: {} MiB before the source, {} MiB after the first snapshot (+{} MiB)",
        rss_before / 1024,
        rss_after / 1024,
        rss_after.saturating_sub(rss_before) / 1024
    );

    // Change → active: a new destination on one route, until the snapshot serves it.
    let route_resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apigate.dev", "v1alpha1", "ApiServerRoute"),
        "apiserverroutes",
    );
    let mut samples = Vec::new();
    for c in 0..changes {
        let i = (c * 37) % routes;
        let ns = format!("bench-{}", i / PER_NAMESPACE);
        let destination = format!("bench-change-{c}");
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &route_resource);
        let patch = serde_json::json!({"spec": {"destinations": [destination]}});
        let sent = Instant::now();
        api.patch(
            &format!("r{i}"),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        loop {
            if state
                .load()
                .snapshot
                .route_for_destination(&destination)
                .is_some()
            {
                break;
            }
            anyhow::ensure!(
                sent.elapsed() < Duration::from_secs(60),
                "change {c} not active after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        samples.push(sent.elapsed());
        if std::env::var_os("APIGATE_BENCH_RSS").is_some() && c % 25 == 24 {
            println!("after {} changes: {} MiB", c + 1, rss_kib() / 1024);
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    samples.sort();
    let rss_changed = rss_kib();
    println!(
        "resident memory after the changes: {} MiB (+{} MiB)",
        rss_changed / 1024,
        rss_changed.saturating_sub(rss_before) / 1024
    );
    if !samples.is_empty() {
        println!(
            "object change → snapshot active ({} changes, debounce 100 ms): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            samples.len(),
            percentile(&samples, 0.5).as_secs_f64() * 1000.0,
            percentile(&samples, 0.99).as_secs_f64() * 1000.0,
            samples[samples.len() - 1].as_secs_f64() * 1000.0
        );
    }
    // Debounce: a burst of updates compiles a handful of times, not once per update.
    let burst = routes.min(1000);
    let installs = || state.metrics.reloads.with_label_values(&["success"]).get();
    let before = installs();
    let started = Instant::now();
    let results: Vec<Result<DynamicObject, kube::Error>> = futures_util::stream::iter(0..burst)
        .map(|i| {
            let api = Api::<DynamicObject>::namespaced_with(
                client.clone(),
                &format!("bench-{}", i / PER_NAMESPACE),
                &route_resource,
            );
            async move {
                let patch = serde_json::json!({"spec": {"destinations": [format!("burst-{i}")]}});
                api.patch(
                    &format!("r{i}"),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for r in results {
        r?;
    }
    let written = started.elapsed();
    loop {
        let active = state.load();
        if (0..burst).all(|i| {
            active
                .snapshot
                .route_for_destination(&format!("burst-{i}"))
                .is_some()
        }) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "burst not active after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "burst of {burst} route updates (written in {:.2} s): all active after {:.2} s with {} snapshot installs",
        written.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        installs() - before
    );
    println!(
        "{}",
        state
            .metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("apigate_kubernetes_secrets")
                || l.starts_with("apigate_kubernetes_routes{"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    source_task.abort();
    running.shutdown(Duration::from_millis(100)).await;
    let _ = Arc::strong_count(&state);
    Ok(())
}

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let routes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5000);
    let changes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    // `passthrough`: routes without TLS material (no Secret watches), to separate the
    // memory of the Secret watches from the rest.
    let rest: Vec<String> = args.collect();
    let passthrough = rest.iter().any(|a| a == "passthrough");
    let probes = rest.iter().any(|a| a == "probes");
    // `APIGATE_LOG=apigate_control=debug` shows when each resource finished listing.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("APIGATE_LOG").unwrap_or_else(|_| "warn".into()))
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let testbed = Testbed::up()?;
        bench(&testbed, routes, changes, passthrough, probes).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube-scale: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
