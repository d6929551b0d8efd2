//! apigate configured by its Kubernetes source from the testbed's API server: routes,
//! EndpointSlices, Secrets and the Gardener acl Extension configure it; status,
//! Events, rotation, invalid objects and an API-server restart behave as operators
//! need. One scenario of named steps: each is reported, a failed one does not hide
//! the others, and a step that needs an earlier one is skipped (with the reason) when
//! that one did not pass.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use apigate_e2e::kube::{self, admin_ok, apply, eventually, KubeGateway, K8S_HOST, NAMESPACE};
use apigate_e2e::{pid_alive, signal, text, Testbed};
use apigate_test_support::client::H2Client;

use super::{Ctx, Steps};

/// Status conditions of a route as `type=status/reason: message` lines, and the object.
fn conditions(
    testbed: &Testbed,
    namespace: &str,
    name: &str,
) -> anyhow::Result<(String, serde_json::Value)> {
    let json = admin_ok(
        testbed,
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

/// The route under test's conditions contain `want`, within `limit`.
pub(super) async fn condition(testbed: &Testbed, what: &str, want: &str) -> anyhow::Result<()> {
    condition_of(testbed, NAMESPACE, what, want).await
}

async fn condition_of(
    testbed: &Testbed,
    namespace: &str,
    what: &str,
    want: &str,
) -> anyhow::Result<()> {
    eventually(what, Duration::from_secs(20), || {
        Ok(conditions(testbed, namespace, "kube-apiserver")?
            .0
            .contains(want))
    })
    .await
    .map(|_| ())
}

/// Requests through the Kubernetes-configured apigate, per replica, by its metrics.
async fn spread(gateway: &KubeGateway, testbed: &Testbed, n: usize) -> anyhow::Result<Vec<f64>> {
    let replicas = testbed.replicas()?;
    let per_replica = |metrics: &apigate_test_support::metrics::Metrics| -> Vec<f64> {
        replicas
            .iter()
            .map(|r| {
                metrics.sum(
                    "apigate_requests_total",
                    &[("route", kube::ROUTE), ("backend", &r.to_string())],
                )
            })
            .collect()
    };
    let before = per_replica(&gateway.metrics().await?);
    let tls = testbed.client_tls(Some("admin"), K8S_HOST)?;
    let client = H2Client::connect(gateway.address()?, &tls).await?;
    for i in 0..n {
        let response = client.get("/api/v1/namespaces/default", &[]).await?;
        ensure!(response.status == 200, "request {i}: {}", response.status);
    }
    let after = per_replica(&gateway.metrics().await?);
    Ok(after.iter().zip(before).map(|(a, b)| a - b).collect())
}

/// kubectl through the gateway must succeed.
fn served(gateway: &KubeGateway, testbed: &Testbed, what: &str) -> anyhow::Result<()> {
    let out = gateway.kubectl(testbed, &["get", "namespaces", NAMESPACE])?;
    ensure!(out.status.success(), "{what}: {}", text(&out));
    Ok(())
}

/// The first error of `result`, else of `restore` (the step's clean-up).
fn restored(result: anyhow::Result<()>, restore: anyhow::Result<()>) -> anyhow::Result<()> {
    match (result, restore) {
        (Err(e), Err(r)) => Err(e.context(format!("(and restoring failed too: {r:#})"))),
        (Err(e), Ok(())) => Err(e),
        (Ok(()), restore) => restore.context("restoring what the step changed"),
    }
}

const OBJECTS: &str = "backing_objects_created";
const SYNCED: &str = "readyz_200_after_the_first_sync";
const RESTART: &str = "seed_apiserver_restart_keeps_serving";

pub(crate) async fn kubernetes_source(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let testbed = &ctx.testbed;
    let replicas = testbed.replicas()?;
    let ca = std::fs::read_to_string(testbed.pki("ca.crt")?)?;
    let mut steps = Steps::new();

    steps
        .run(OBJECTS, &[], async {
            kube::install_crds(testbed).context("installing CRDs")?;
            kube::create_backing_objects(testbed, NAMESPACE).context("backing objects")?;
            for (i, replica) in replicas.iter().enumerate() {
                apply(testbed, &kube::slice_yaml(i, *replica, true))?;
            }
            apply(testbed, &kube::extension_yaml("127.0.0.0/8"))?;
            apply(
                testbed,
                &kube::route_yaml(NAMESPACE, "kube-apiserver", "serving"),
            )
        })
        .await;

    // Listeners and admin endpoint only: the source is not running yet.
    let mut gateway = KubeGateway::start(testbed)
        .await
        .context("starting apigate (no source yet)")?;
    steps
        .run("readyz_503_before_the_source_starts", &[], async {
            let status = gateway.readyz().await?;
            ensure!(
                status == 503,
                "/readyz answered {status} before the source was started"
            );
            Ok(())
        })
        .await;
    gateway.start_source()?;
    let address = gateway.address()?;

    steps
        .run(SYNCED, &[OBJECTS], async {
            let started = Instant::now();
            loop {
                let status = gateway.readyz().await?;
                if status == 200 {
                    break;
                }
                ensure!(
                    started.elapsed() < Duration::from_secs(60),
                    "/readyz still {status} 60 s after the source started"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            println!(
                "    initial sync + first snapshot: {} ms",
                started.elapsed().as_millis()
            );
            Ok(())
        })
        .await;

    steps
        .run("kubectl_reaches_every_replica", &[SYNCED], async {
            served(&gateway, testbed, "kubectl through apigate")?;
            let counts = spread(&gateway, testbed, 60).await?;
            ensure!(
                counts.iter().all(|c| *c >= 10.0),
                "requests per replica: {counts:?}"
            );
            Ok(())
        })
        .await;

    steps
        .run("status_written_by_the_lease_holder", &[SYNCED], async {
            eventually(
                "status Accepted=True, 3 endpoints",
                Duration::from_secs(20),
                || {
                    let (lines, object) = conditions(testbed, NAMESPACE, "kube-apiserver")?;
                    Ok(lines.contains("Accepted=True/Accepted")
                        && lines.contains("BackendsReady=True/EndpointsReady: 3 ready endpoint(s)")
                        && object["status"]["observedGeneration"]
                            == object["metadata"]["generation"])
                },
            )
            .await?;
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
            Ok(())
        })
        .await;

    // A probe identity the replicas refuse: the route says so and keeps serving.
    steps
        .run("refused_health_probes_show_in_the_route_status", &[SYNCED], async {
            let result = async {
                condition(testbed, "HealthChecks=True", "HealthChecks=True/NoProblem").await?;
                apply(
                    testbed,
                    &format!(
                        "apiVersion: v1\nkind: Secret\nmetadata: {{name: probe-token, namespace: {NAMESPACE}}}\nstringData: {{token: not-a-valid-token}}\n"
                    ),
                )?;
                let patch = r#"{"spec":{"health":{"token":{"name":"probe-token"},"interval":"500ms","timeout":"250ms"}}}"#;
                admin_ok(
                    testbed,
                    &["-n", NAMESPACE, "patch", "apiserverroute", "kube-apiserver", "--type", "merge", "-p", patch],
                    None,
                )?;
                let started = Instant::now();
                condition(
                    testbed,
                    "HealthChecks=False once kube-apiserver refuses the probe token",
                    "HealthChecks=False/ProbeUnauthorized",
                )
                .await?;
                println!(
                    "    refused probe token → route status says so: {} ms",
                    started.elapsed().as_millis()
                );
                served(&gateway, testbed, "kubectl while the probes are refused")?;
                Ok(())
            }
            .await;
            let restore = async {
                admin_ok(
                    testbed,
                    &["-n", NAMESPACE, "patch", "apiserverroute", "kube-apiserver", "--type", "merge", "-p", r#"{"spec":{"health":null}}"#],
                    None,
                )?;
                condition(testbed, "HealthChecks=True again", "HealthChecks=True/NoProblem").await
            }
            .await;
            restored(result, restore)
        })
        .await;

    // The acl Extension is the allowlist: narrowing it denies us (127.0.0.1).
    steps
        .run("acl_extension_edit_denies_our_address", &[SYNCED], async {
            let result = async {
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
                Ok(())
            }
            .await;
            let restore = async {
                apply(testbed, &kube::extension_yaml("127.0.0.0/8"))?;
                kube::until_handshake(
                    address,
                    &ca,
                    true,
                    Duration::from_secs(10),
                    "allowed again after restoring the acl",
                )
                .await
                .map(|_| ())
            }
            .await;
            restored(result, restore)
        })
        .await;

    // Endpoints: a terminating replica gets no new requests; back when ready.
    steps
        .run("terminating_endpoint_gets_no_requests", &[SYNCED], async {
            let result = async {
                apply(testbed, &kube::slice_yaml(2, replicas[2], false))?;
                condition(
                    testbed,
                    "BackendsReady shows 2 ready",
                    "2 ready endpoint(s), 1 terminating or not ready",
                )
                .await?;
                let counts = spread(&gateway, testbed, 40).await?;
                ensure!(
                    counts[2] == 0.0 && counts[0] > 0.0 && counts[1] > 0.0,
                    "scaled down to 2: {counts:?}"
                );
                Ok(())
            }
            .await;
            let restore = async {
                apply(testbed, &kube::slice_yaml(2, replicas[2], true))?;
                condition(testbed, "3 ready again", "3 ready endpoint(s)").await?;
                let counts = spread(&gateway, testbed, 60).await?;
                ensure!(
                    counts.iter().all(|c| *c > 0.0),
                    "scaled up to 3: {counts:?}"
                );
                Ok(())
            }
            .await;
            restored(result, restore)
        })
        .await;

    // Rotation: the new serving certificate is presented on new handshakes.
    steps
        .run(
            "rotated_secret_presented_on_new_handshakes",
            &[SYNCED],
            async {
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
                served(&gateway, testbed, "kubectl after rotation")
            },
        )
        .await;

    // Invalid objects: status + Event, the last good version keeps serving.
    steps
        .run(
            "invalid_objects_keep_the_last_good_version",
            &[SYNCED],
            async {
                let result = async {
                    apply(
                        testbed,
                        &kube::route_yaml(NAMESPACE, "kube-apiserver", "no-such-secret"),
                    )?;
                    eventually(
                        "Accepted=False for a missing Secret",
                        Duration::from_secs(20),
                        || {
                            let (lines, _) = conditions(testbed, NAMESPACE, "kube-apiserver")?;
                            Ok(lines.contains("Accepted=False/InvalidSecretRef")
                                && lines.contains("last accepted version keeps serving"))
                        },
                    )
                    .await?;
                    served(&gateway, testbed, "the last good version stopped serving")?;
                    eventually(
                        "a Warning Event for the rejection",
                        Duration::from_secs(20),
                        || {
                            let events = admin_ok(
                                testbed,
                                &["-n", NAMESPACE, "get", "events", "-o", "json"],
                                None,
                            )?;
                            Ok(events.contains("InvalidSecretRef")
                                && events.contains("no-such-secret"))
                        },
                    )
                    .await?;
                    apply(testbed, &kube::extension_yaml("not-a-cidr"))?;
                    apply(
                        testbed,
                        &kube::route_yaml(NAMESPACE, "kube-apiserver", "serving"),
                    )?;
                    condition(
                        testbed,
                        "Accepted=False for a malformed acl providerConfig",
                        "Accepted=False/InvalidAcl",
                    )
                    .await?;
                    let rejected = gateway.metrics().await?.sum(
                        "apigate_kubernetes_routes_rejected",
                        &[("reason", "InvalidAcl")],
                    );
                    ensure!(rejected >= 1.0, "rejection metric: {rejected}");
                    served(&gateway, testbed, "serving stopped on a malformed acl")
                }
                .await;
                let restore = async {
                    apply(
                        testbed,
                        &kube::route_yaml(NAMESPACE, "kube-apiserver", "serving"),
                    )?;
                    apply(testbed, &kube::extension_yaml("127.0.0.0/8"))?;
                    condition(testbed, "accepted again", "Accepted=True").await
                }
                .await;
                restored(result, restore)
            },
        )
        .await;

    // A newer route in another namespace claiming the hostname loses.
    steps
        .run("newer_route_loses_the_hostname", &[SYNCED], async {
            let result = async {
                kube::create_backing_objects(testbed, "shoot--e2e--other")?;
                apply(
                    testbed,
                    &kube::route_yaml("shoot--e2e--other", "kube-apiserver", "serving"),
                )?;
                condition_of(
                    testbed,
                    "shoot--e2e--other",
                    "HostnameConflict on the newer route",
                    "Accepted=False/HostnameConflict",
                )
                .await?;
                condition(testbed, "the older route accepted", "Accepted=True").await
            }
            .await;
            let restore = kube::delete_route(testbed, "shoot--e2e--other");
            restored(result, restore)
        })
        .await;

    // One apply of a route and, after it, the Service it routes to: the route's own
    // event arrives first and is compiled at once (the source was quiet), but the
    // rejection that compile found is not announced; the next compile accepts it.
    steps
        .run(
            "a_route_applied_before_its_service_is_never_announced_rejected",
            &[SYNCED],
            async {
                const LATE: &str = "shoot--e2e--late";
                let result = async {
                    kube::create_backing_objects(testbed, LATE)?;
                    admin_ok(
                        testbed,
                        &["-n", LATE, "delete", "service", "kube-apiserver"],
                        None,
                    )?;
                    let route = kube::route_yaml(LATE, "kube-apiserver", "serving")
                        .replace(K8S_HOST, "late.e2e.example.com");
                    let service = format!(
                        "apiVersion: v1
kind: Service
metadata: {{name: kube-apiserver, namespace: {LATE}}}
spec:
  ports: [{{name: https, port: 443, targetPort: 6443, protocol: TCP}}]
"
                    );
                    // Quiet for longer than the debounce, so the route compiles at once.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    apply(testbed, &format!("{route}---\n{service}"))?;
                    condition_of(
                        testbed,
                        LATE,
                        "the route accepted once its Service arrived",
                        "Accepted=True",
                    )
                    .await?;
                    let events =
                        admin_ok(testbed, &["-n", LATE, "get", "events", "-o", "json"], None)?;
                    ensure!(
                        !events.contains("BackendNotFound"),
                        "the route was announced rejected for the Service that came with it: {events}"
                    );
                    Ok(())
                }
                .await;
                let restore = kube::delete_route(testbed, LATE);
                restored(result, restore)
            },
        )
        .await;

    // Restart of the seed's kube-apiserver (the replica apigate watches through): the
    // configuration keeps serving, the watches resume.
    steps
        .run(RESTART, &[SYNCED], async {
            restart_replica(testbed, 0, || {
                served(
                    &gateway,
                    testbed,
                    "serving while the seed API server is down",
                )
            })
            .await?;
            let started = Instant::now();
            apply(testbed, &kube::extension_yaml("10.0.0.0/8"))?;
            let resumed = kube::until_handshake(
                address,
                &ca,
                false,
                Duration::from_secs(60),
                "watches resumed after the restart (acl edit applied)",
            )
            .await;
            apply(testbed, &kube::extension_yaml("127.0.0.0/8"))?;
            resumed?;
            println!(
                "    seed API server back → acl edit applied: {} ms",
                started.elapsed().as_millis()
            );
            kube::until_handshake(
                address,
                &ca,
                true,
                Duration::from_secs(20),
                "allowed after the restart",
            )
            .await
            .map(|_| ())
        })
        .await;

    // Deleting the route refuses its SNI (seen only if the watches resumed).
    steps
        .run(
            "route_deletion_refuses_the_sni",
            &[SYNCED, RESTART],
            async {
                let started = Instant::now();
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
                let deleted = started.elapsed();
                let refused = kube::until_handshake(
                    address,
                    &ca,
                    false,
                    Duration::from_secs(20),
                    "SNI refused after deletion",
                )
                .await?;
                println!(
                    "    route deleted in {} ms → SNI refused {} ms later",
                    deleted.as_millis(),
                    refused.as_millis()
                );
                // The refusal carries an unrecognized_name alert, so client-go fails at
                // once and says why (a bare close would be retried for 10 s, as if
                // answered 500 + Retry-After).
                let started = Instant::now();
                let out = gateway.kubectl(testbed, &["get", "namespaces"])?;
                ensure!(!out.status.success(), "kubectl still served after deletion");
                let said = apigate_e2e::text(&out);
                ensure!(
                    said.contains("unrecognized name"),
                    "kubectl should name the refusal: {said}"
                );
                println!(
                    "    kubectl refused in {} ms: {}",
                    started.elapsed().as_millis(),
                    said.lines().last().unwrap_or_default()
                );
                Ok(())
            },
        )
        .await;

    let result = steps.finish();
    gateway.stop().await;
    result
}

/// Stop replica `index` (SIGKILL), run `while_down`, start it again with the same
/// command line and wait until it answers. The new pid is recorded so that
/// `testbed.sh down` stops it.
async fn restart_replica(
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
    signal(pid, "KILL")?;
    let started = Instant::now();
    while pid_alive(pid) {
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "replica {index} (pid {pid}) survived SIGKILL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    while tokio::net::TcpStream::connect(replica).await.is_err() {
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "replica {index} did not come back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Listening is not serving yet; wait for its /readyz (the admin kubeconfig points
    // at replica 0, the one restarted).
    let started = Instant::now();
    while !kube::admin(testbed, &["get", "--raw", "/readyz"], None)?
        .status
        .success()
    {
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "replica {index} not ready"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}
