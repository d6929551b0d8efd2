//! Kubernetes mode: two apigate replicas decide one configuration rollout through the
//! `ApiGateRollout` record, against the real kube-apiserver.
//! - the Lease holder starts the rollout and records it; the other replica serves
//!   what the record says;
//! - the leader is killed mid-bake (its Lease is not released); the other replica takes
//!   the Lease and promotes at the recorded deadline, not a whole bake later, with a
//!   `Promoted` Event;
//! - an operator aborts the next rollout by setting `spec.action` on the object;
//! - a deleted record is written again by the leader, the aborted revision still
//!   withdrawn;
//! - a record no replica can rebuild keeps a new follower unready (it says why); once
//!   it leads it falls back to what it sees and becomes ready;
//! - an action taken while the record's status cannot be written (an API front refuses
//!   it) is cleared and taken once; its answer is written once writes work again;
//! - a bad revision (a wrong upstream server name, so 502s) on the canary route
//!   freezes the rollout; the record says why, a `Frozen` Event is published, and the
//!   canary route serves the stable revision again; `apigate rollout abort --record`
//!   withdraws it through the object.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use apigate_e2e::kube::{self, admin, admin_ok, apply, KubeGateway, Replica};

use super::Ctx;

const CANARY_NS: &str = "shoot--e2e--canary";
const STABLE_NS: &str = "shoot--e2e--stable";
/// The non-canary route of the bad-revision scenario (the other one's namespace may
/// still be terminating).
const OTHER_NS: &str = "shoot--e2e--other";
/// The record: named after the e2e gateway, in the Lease namespace.
const RECORD: &str = "e2e-kubernetes";
const LEASE: &str = "apigate-rollout-e2e";
const BAKE: Duration = Duration::from_secs(20);

/// A passthrough route with `hosts` hostnames.
fn route(namespace: &str, canary: bool, hosts: usize) -> String {
    let hostnames: Vec<String> = (0..hosts)
        .map(|i| format!("h{i}.{namespace}.e2e.example"))
        .collect();
    format!(
        "apiVersion: apigate.dev/v1alpha1
kind: ApiServerRoute
metadata:
  name: kube-apiserver
  namespace: {namespace}
  labels: {{apigate.dev/canary: \"{canary}\"}}
spec:
  hostnames: [{}]
  mode: passthrough
  backendRef: {{service: kube-apiserver, port: 443}}
",
        hostnames.join(", ")
    )
}

/// Both routes in one apply, so that one revision changes both.
fn routes(ctx: &Ctx, hosts: usize) -> anyhow::Result<()> {
    apply(
        &ctx.testbed,
        &format!(
            "{}---\n{}",
            route(CANARY_NS, true, hosts),
            route(STABLE_NS, false, hosts)
        ),
    )
}

/// The record's status as JSON (`null` before anyone wrote it).
fn record(ctx: &Ctx) -> anyhow::Result<serde_json::Value> {
    let out = admin(
        &ctx.testbed,
        &[
            "-n",
            "default",
            "get",
            "apigaterollout",
            RECORD,
            "-o",
            "json",
        ],
        None,
    )?;
    if !out.status.success() {
        return Ok(serde_json::Value::Null);
    }
    let object: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(object["status"].clone())
}

async fn until_record(
    ctx: &Ctx,
    what: &str,
    limit: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    loop {
        let status = record(ctx)?;
        if check(&status) {
            return Ok(status);
        }
        ensure!(
            started.elapsed() < limit,
            "{what}: not within {limit:?}; record: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `/rollout` of a replica.
async fn status(gateway: &KubeGateway) -> anyhow::Result<serde_json::Value> {
    let admin = gateway.running()?.admin.context("no admin listener")?;
    let (code, body) = apigate_e2e::admin_get(admin, "/rollout").await?;
    ensure!(code == 200, "/rollout answered {code}: {body}");
    Ok(serde_json::from_str(&body)?)
}

/// A replica of the e2e gateway with rollouts on, sharing the Lease and the record.
fn replica_config(identity: &str) -> Replica {
    Replica {
        identity: identity.into(),
        lease: LEASE.into(),
        lease_duration: Duration::from_secs(3),
        gateway_spec: format!(
            "  rollout: {{enabled: true, bakeTime: {}s, gates: {{enabled: false}}}}\n",
            BAKE.as_secs()
        ),
        ..Replica::default()
    }
}

/// A replica started and ready.
async fn replica(ctx: &Ctx, identity: &str) -> anyhow::Result<KubeGateway> {
    let mut gateway = KubeGateway::replica(&ctx.testbed, replica_config(identity)).await?;
    gateway.start_source()?;
    let started = Instant::now();
    while gateway.readyz().await? != 200 {
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "{identity}: /readyz not 200 within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(gateway)
}

fn events(ctx: &Ctx, reason: &str) -> anyhow::Result<String> {
    admin_ok(
        &ctx.testbed,
        &[
            "-n",
            "default",
            "get",
            "events",
            "--field-selector",
            &format!(
                "involvedObject.kind=ApiGateRollout,involvedObject.name={RECORD},reason={reason}"
            ),
            "-o",
            "name",
        ],
        None,
    )
}

/// An operator's abort, set on the record's `spec.action` as the README tells.
fn abort_by_object(testbed: &apigate_e2e::Testbed) -> anyhow::Result<()> {
    admin_ok(
        testbed,
        &[
            "-n",
            "default",
            "patch",
            "apigaterollout",
            RECORD,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"action":"Abort"}}"#,
        ],
        None,
    )?;
    Ok(())
}

fn timestamp(value: &serde_json::Value) -> anyhow::Result<k8s_openapi::jiff::Timestamp> {
    value
        .as_str()
        .context("no timestamp")?
        .parse()
        .context("timestamp")
}

/// Two replicas, one record; the leader killed mid-rollout; an abort by the object.
pub(crate) async fn leader_killed_mid_rollout_continues_from_the_record(
    ctx: Arc<Ctx>,
) -> anyhow::Result<()> {
    let testbed = &ctx.testbed;
    kube::install_crds(testbed)?;
    for (kind, name) in [("apigaterollout", RECORD), ("lease", LEASE)] {
        let _ = admin(
            testbed,
            &["-n", "default", "delete", kind, name, "--ignore-not-found"],
            None,
        )?;
    }
    for namespace in [CANARY_NS, STABLE_NS] {
        apply(
            testbed,
            &format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: kube-apiserver, namespace: {namespace}}}\nspec:\n  ports: [{{name: https, port: 443, targetPort: 6443, protocol: TCP}}]\n"
            ),
        )?;
    }
    routes(&ctx, 1)?;

    let mut first = replica(&ctx, "e2e-a").await?;
    until_record(&ctx, "e2e-a leads", Duration::from_secs(30), |r| {
        r["leader"] == "e2e-a" && r["phase"] == "Idle"
    })
    .await?;
    let mut second = replica(&ctx, "e2e-b").await?;
    let idle = record(&ctx)?;

    // A loosening change (a hostname added to both routes) rolls out.
    routes(&ctx, 2)?;
    until_record(&ctx, "the rollout starts", Duration::from_secs(20), |r| {
        r["phase"] == "Baking"
    })
    .await?;
    // The follower serves what the record says: the same target on the same canaries.
    let started = Instant::now();
    let baking = loop {
        let baking = record(&ctx)?;
        let s = status(&second).await?;
        if s["phase"] == "baking" && s["targetId"] == baking["targetRevision"] {
            ensure!(s["authority"] == "follower", "{s}");
            ensure!(s["stableId"] == idle["stableRevision"], "{s}");
            break baking;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "the follower does not serve the record: {s}; record: {baking}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(
        baking["canaries"] == serde_json::json!([format!("{CANARY_NS}/kube-apiserver")]),
        "canaries: {baking}"
    );
    ensure!(
        baking["stableRevision"] == idle["stableRevision"],
        "stable stays: {baking}"
    );
    let target = baking["targetRevision"].clone();
    let deadline = timestamp(&baking["deadline"])?;

    // Kill the leader well into the bake, so that a bake the new leader restarted
    // would end clearly after the recorded deadline: its tasks stop, the Lease stays
    // taken until it expires.
    let into = k8s_openapi::jiff::Timestamp::now()
        .duration_since(timestamp(&baking["since"])?)
        .as_secs_f64();
    if into < 5.0 {
        tokio::time::sleep(Duration::from_secs_f64(5.0 - into)).await;
    }
    first.stop().await;
    let killed = Instant::now();
    let taken = until_record(&ctx, "e2e-b takes over", Duration::from_secs(20), |r| {
        r["leader"] == "e2e-b"
    })
    .await?;
    println!(
        "    new leader recorded {} ms after the kill",
        killed.elapsed().as_millis()
    );
    if taken["phase"] == "Baking" {
        ensure!(taken["targetRevision"] == target, "same target: {taken}");
        let continued = timestamp(&taken["deadline"])?;
        let drift = continued.duration_since(deadline).abs();
        ensure!(
            drift.as_secs_f64() < 1.0,
            "the new leader keeps the recorded deadline: {deadline} then {continued}"
        );
    }
    let promoted = until_record(&ctx, "promotion", BAKE * 2, |r| {
        r["phase"] == "Idle" && r["stableRevision"] == target
    })
    .await?;
    // At the recorded deadline; a restarted bake would end at least 7 s after it.
    let late = k8s_openapi::jiff::Timestamp::now()
        .duration_since(deadline)
        .as_secs_f64();
    println!("    promoted {late:.1} s after the recorded deadline");
    ensure!(
        late < 3.0,
        "promoted {late:.1} s after the recorded deadline: the bake restarted instead of continuing"
    );
    ensure!(
        promoted["stableRoutes"] == serde_json::json!([]),
        "{promoted}"
    );
    let announced = events(&ctx, "Promoted")?;
    ensure!(!announced.trim().is_empty(), "no Promoted Event");

    // The next rollout, aborted through the object.
    routes(&ctx, 3)?;
    until_record(
        &ctx,
        "the next rollout starts",
        Duration::from_secs(20),
        |r| r["phase"] == "Baking",
    )
    .await?;
    abort_by_object(testbed)?;
    let aborted = until_record(&ctx, "abort", Duration::from_secs(10), |r| {
        r["phase"] == "Idle" && r["lastAction"]["result"] == "Done"
    })
    .await?;
    ensure!(
        aborted["stableRevision"] == target,
        "the aborted revision is withdrawn: {aborted}"
    );
    ensure!(
        !events(&ctx, "Aborted")?.trim().is_empty(),
        "no Aborted Event"
    );

    // A deleted record is written again by the leader, with the same decision (the
    // aborted revision still withdrawn).
    admin_ok(
        testbed,
        &["-n", "default", "delete", "apigaterollout", RECORD],
        None,
    )?;
    let deleted = Instant::now();
    let rewritten = until_record(&ctx, "the record rewritten", Duration::from_secs(15), |r| {
        r["phase"] == "Idle"
    })
    .await?;
    println!(
        "    deleted record written again after {} ms",
        deleted.elapsed().as_millis()
    );
    ensure!(
        rewritten["stableRevision"] == target
            && rewritten["leader"] == aborted["leader"]
            && rewritten["abortedRevision"] == aborted["abortedRevision"]
            && !aborted["abortedRevision"].is_null(),
        "the rewritten record is not the leader's decision: {rewritten}, before: {aborted}"
    );

    second.stop().await;
    unrebuildable_record_keeps_a_new_replica_unready_until_it_leads(&ctx).await?;
    an_action_is_cleared_taken_once_and_its_answer_retried(&ctx).await?;
    for namespace in [CANARY_NS, STABLE_NS] {
        delete_route_and_namespace(&ctx, namespace)?;
    }
    Ok(())
}

/// A record whose stable revision no replica can rebuild (overwritten by hand): a new
/// replica that follows it stays unready and says why; once it leads, it falls back to
/// what it sees, writes that, and becomes ready.
async fn unrebuildable_record_keeps_a_new_replica_unready_until_it_leads(
    ctx: &Ctx,
) -> anyhow::Result<()> {
    const NOBODY: &str = "0000000000000000";
    let testbed = &ctx.testbed;
    // Someone else holds the Lease for an hour: the new replica follows.
    admin_ok(
        testbed,
        &[
            "-n",
            "default",
            "patch",
            "lease",
            LEASE,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"holderIdentity":"e2e-elsewhere","leaseDurationSeconds":3600}}"#,
        ],
        None,
    )?;
    let kubeconfig = std::path::PathBuf::from(testbed.get("KUBECONFIG_ADMIN")?);
    let client = apigate::kubernetes::client(Some(&kubeconfig)).await?;
    let records = ::kube::api::Api::<::kube::api::DynamicObject>::namespaced_with(
        client,
        "default",
        &::kube::core::ApiResource::from_gvk_with_plural(
            &::kube::core::GroupVersionKind::gvk("apigate.dev", "v1alpha1", "ApiGateRollout"),
            "apigaterollouts",
        ),
    );
    records
        .patch_status(
            RECORD,
            &::kube::api::PatchParams::default(),
            &::kube::api::Patch::Merge(serde_json::json!({"status": {"stableRevision": NOBODY}})),
        )
        .await?;

    // Started by hand: `replica` waits for readiness.
    let mut third = KubeGateway::replica(testbed, replica_config("e2e-d")).await?;
    third.start_source()?;
    let result = async {
        let started = Instant::now();
        loop {
            let behind = status(&third).await?["behind"].clone();
            if behind
                .as_str()
                .is_some_and(|why| why.contains("not the recorded stable revision"))
            {
                break;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(30),
                "e2e-d never said it cannot rebuild the record: {behind}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // It keeps saying so, and stays unready, while it follows.
        for _ in 0..20 {
            let code = third.readyz().await?;
            ensure!(
                code != 200,
                "e2e-d ready while serving no recorded revision"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        admin_ok(testbed, &["-n", "default", "delete", "lease", LEASE], None)?;
        let led = until_record(ctx, "e2e-d leads", Duration::from_secs(20), |r| {
            r["leader"] == "e2e-d" && r["stableRevision"] != NOBODY && r["phase"] == "Idle"
        })
        .await?;
        let started = Instant::now();
        while third.readyz().await? != 200 {
            ensure!(
                started.elapsed() < Duration::from_secs(10),
                "e2e-d leads ({led}) but is not ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("    unrebuildable record: follower unready; as leader it fell back and is ready");
        Ok(())
    }
    .await;
    third.stop().await;
    result
}

/// An operator's action while the leader cannot write the record's status (an API
/// front refuses it): the action is cleared from the spec and taken at once; the answer
/// and the decision reach the record once writes work again, and the action is not
/// taken a second time.
async fn an_action_is_cleared_taken_once_and_its_answer_retried(ctx: &Ctx) -> anyhow::Result<()> {
    let testbed = &ctx.testbed;
    let front = apigate_e2e::front::FaultyFront::start(testbed).await?;
    let mut leader = KubeGateway::replica(
        testbed,
        Replica {
            client: Some(front.client()?),
            ..replica_config("e2e-f")
        },
    )
    .await?;
    leader.start_source()?;
    let result = async {
        until_record(ctx, "e2e-f leads", Duration::from_secs(30), |r| {
            r["leader"] == "e2e-f" && r["phase"] == "Idle"
        })
        .await?;
        routes(ctx, 5)?;
        until_record(ctx, "a rollout to abort", Duration::from_secs(20), |r| {
            r["phase"] == "Baking"
        })
        .await?;
        front.refuse(&[&format!(
            "/apis/apigate.dev/v1alpha1/namespaces/default/apigaterollouts/{RECORD}/status"
        )]);
        // The record as it stands once no write can reach it: the routes created above
        // may still have moved its target until the refusal took hold, and a write may
        // have been on its way.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let baking = record(ctx)?;
        ensure!(baking["phase"] == "Baking", "still baking: {baking}");
        abort_by_object(testbed)?;
        // Cleared from the spec and taken, although the record cannot say so yet.
        let started = Instant::now();
        loop {
            let spec = admin_ok(
                testbed,
                &[
                    "-n",
                    "default",
                    "get",
                    "apigaterollout",
                    RECORD,
                    "-o",
                    "jsonpath={.spec.action}",
                ],
                None,
            )?;
            let phase = status(&leader).await?["phase"].clone();
            if spec.trim().is_empty() && phase == "idle" {
                break;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(10),
                "the action was not cleared and taken: spec.action {spec:?}, phase {phase}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let unanswered = record(ctx)?;
        ensure!(
            unanswered["phase"] == "Baking"
                && unanswered["targetRevision"] == baking["targetRevision"],
            "the record was written although its status was refused: {unanswered}"
        );
        front.refuse(&[]);
        let answered = until_record(ctx, "the answer", Duration::from_secs(15), |r| {
            r["phase"] == "Idle"
                && r["lastAction"]["action"] == "Abort"
                && r["lastAction"] != unanswered["lastAction"]
        })
        .await?;
        ensure!(
            answered["lastAction"]["result"] == "Done"
                && answered["abortedRevision"] == baking["targetRevision"],
            "taken once, and answered: {answered}"
        );
        println!(
            "    action cleared and taken while the record could not be written; answered after"
        );
        Ok(())
    }
    .await;
    leader.stop().await;
    drop(front);
    result
}

/// The route goes now (a later scenario must not see it); its namespace in time.
fn delete_route_and_namespace(ctx: &Ctx, namespace: &str) -> anyhow::Result<()> {
    kube::delete_route(&ctx.testbed, namespace)?;
    admin(
        &ctx.testbed,
        &["delete", "namespace", namespace, "--wait=false"],
        None,
    )?;
    Ok(())
}

/// The Kubernetes-source route (terminate, on the real replicas) as a canary, its
/// upstream expecting `server_name`.
fn terminate_canary(server_name: &str) -> String {
    kube::route_yaml(kube::NAMESPACE, "kube-apiserver", "serving")
        .replace(
            &format!("metadata: {{name: kube-apiserver, namespace: {}}}", kube::NAMESPACE),
            &format!(
                "metadata: {{name: kube-apiserver, namespace: {}, labels: {{apigate.dev/canary: \"true\"}}}}",
                kube::NAMESPACE
            ),
        )
        .replace(
            "serverName: kubernetes.default.svc",
            &format!("serverName: {server_name}"),
        )
}

/// One leader with gates on; a revision that breaks the canary route freezes.
pub(crate) async fn a_bad_revision_freezes_and_the_record_says_why(
    ctx: Arc<Ctx>,
) -> anyhow::Result<()> {
    let testbed = &ctx.testbed;
    super::fail_closed::ensure_objects(&ctx)?;
    for (kind, name) in [("apigaterollout", RECORD), ("lease", LEASE)] {
        admin(
            testbed,
            &["-n", "default", "delete", kind, name, "--ignore-not-found"],
            None,
        )?;
    }
    let good = terminate_canary("kubernetes.default.svc");
    ensure!(good.contains("apigate.dev/canary"), "label not set: {good}");
    apply(testbed, &good)?;
    apply(
        testbed,
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {OTHER_NS}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: kube-apiserver, namespace: {OTHER_NS}}}\nspec:\n  ports: [{{name: https, port: 443, targetPort: 6443, protocol: TCP}}]\n---\n{}",
            route(OTHER_NS, false, 1)
        ),
    )?;
    let result = async {
        let mut gateway = KubeGateway::replica(
            testbed,
            Replica {
                identity: "e2e-c".into(),
                lease: LEASE.into(),
                lease_duration: Duration::from_secs(3),
                gateway_spec:
                    "  rollout: {enabled: true, bakeTime: 30s, gates: {minRequests: 10}}\n".into(),
                ..Replica::default()
            },
        )
        .await?;
        gateway.start_source()?;
        let started = Instant::now();
        while gateway.readyz().await? != 200 {
            ensure!(started.elapsed() < Duration::from_secs(60), "not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        until_record(&ctx, "e2e-c leads", Duration::from_secs(30), |r| {
            r["leader"] == "e2e-c" && r["phase"] == "Idle"
        })
        .await?;
        let version = || -> anyhow::Result<bool> {
            Ok(gateway
                .kubectl(testbed, &["get", "--raw", "/version"])?
                .status
                .success())
        };
        ensure!(version()?, "the canary route serves before the rollout");

        apply(testbed, &terminate_canary("wrong.example"))?;
        let changed = Instant::now();
        until_record(
            &ctx,
            "the bad revision rolls out",
            Duration::from_secs(20),
            |r| r["phase"] == "Baking",
        )
        .await?;
        // Requests on the canary until the gates freeze the rollout.
        let mut failed = 0;
        let frozen = loop {
            if !version()? {
                failed += 1;
            }
            let status = record(&ctx)?;
            if status["phase"] == "Frozen" {
                break status;
            }
            ensure!(
                changed.elapsed() < Duration::from_secs(60),
                "no freeze within 60 s ({failed} requests failed): {status}"
            );
        };
        println!(
            "    bad revision → Frozen in the record: {} ms ({failed} canary requests failed)",
            changed.elapsed().as_millis()
        );
        let reason = frozen["reason"].as_str().unwrap_or_default();
        ensure!(reason.contains("success_rate"), "reason: {reason}");
        ensure!(
            !events(&ctx, "Frozen")?.trim().is_empty(),
            "no Frozen Event"
        );
        // The canary route is back on the stable revision.
        let started = Instant::now();
        while !version()? {
            ensure!(
                started.elapsed() < Duration::from_secs(20),
                "the canary route does not serve the stable revision after the freeze"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // `apigate rollout status|abort --record`: through the object, as an operator
        // would with the CLI.
        let kubeconfig = std::path::PathBuf::from(testbed.get("KUBECONFIG_ADMIN")?);
        let record_name = format!("default/{RECORD}");
        let shown =
            apigate::kubernetes::rollout_command(Some(&kubeconfig), &record_name, None).await?;
        ensure!(shown.contains("\"Frozen\""), "status: {shown}");
        let answer = apigate::kubernetes::rollout_command(
            Some(&kubeconfig),
            &record_name,
            Some(apigate_control::source::kubernetes::rollout_record::RolloutAction::Abort),
        )
        .await?;
        ensure!(answer.contains("done"), "abort: {answer}");
        until_record(&ctx, "aborted", Duration::from_secs(10), |r| {
            r["phase"] == "Idle" && r["abortedRevision"].is_string()
        })
        .await?;
        gateway.stop().await;
        Ok(())
    }
    .await;
    apply(
        testbed,
        &kube::route_yaml(kube::NAMESPACE, "kube-apiserver", "serving"),
    )?;
    delete_route_and_namespace(&ctx, OTHER_NS)?;
    result
}
