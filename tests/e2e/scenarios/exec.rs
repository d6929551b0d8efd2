//! `kubectl exec` through apigate: the SPDY upgrade goes through apigate's terminating
//! route to kube-apiserver, which proxies it to the testbed's fake kubelet (the
//! kubelet's own exec server code; the "container" is a host process). Once with a
//! client-certificate user (alice, via front-proxy headers) and once with a
//! bearer-token user (bob).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;
use apigate_e2e::{kube, short, text};
use apigate_test_support::metrics::Metrics;

use super::{Ctx, ROUTE};

/// Upgrades on the terminating route: answered 101, and tunnels that ended.
fn upgrades(metrics: &Metrics) -> (f64, f64) {
    (
        metrics.sum(
            "apigate_requests_total",
            &[("route", ROUTE), ("code", "101")],
        ),
        metrics.sum(
            "apigate_tunnels_total",
            &[("route", ROUTE), ("kind", "upgrade")],
        ),
    )
}

/// `kubectl exec` into the testbed's fake pod as `context`, with `exec_args` (e.g.
/// `-i`) before `--` and `command` after it.
fn exec(
    ctx: &Ctx,
    context: &str,
    exec_args: &[&str],
    command: &[&str],
    stdin: Option<&[u8]>,
) -> anyhow::Result<std::process::Output> {
    let namespace = ctx.testbed.get("EXEC_NAMESPACE")?;
    let pod = ctx.testbed.get("EXEC_POD")?;
    let mut args = vec!["exec", "-n", namespace];
    args.extend_from_slice(exec_args);
    args.push(pod);
    args.push("--");
    args.extend_from_slice(command);
    ctx.gateway
        .kubectl_input(&ctx.testbed, context, &args, stdin)
}

/// The exec round trips for `context`: stdout, routing, stdin, stderr and the exit
/// code. Returns how many upgrades succeeded (each one a 101 through apigate).
fn exec_round_trips(ctx: &Ctx, context: &str) -> anyhow::Result<f64> {
    let out = exec(ctx, context, &[], &["echo", "hello"], None)?;
    ensure!(
        out.status.success() && out.stdout == b"hello\n",
        "exec echo hello as {context}: {:?} {}",
        out.status,
        text(&out)
    );

    // Routed to the right pod and container (the fake kubelet says where it ran).
    let out = exec(
        ctx,
        context,
        &[],
        &[
            "sh",
            "-c",
            "echo $FAKE_KUBELET_NAMESPACE/$FAKE_KUBELET_POD/$FAKE_KUBELET_CONTAINER",
        ],
        None,
    )?;
    let want = format!(
        "{}/{}/{}\n",
        ctx.testbed.get("EXEC_NAMESPACE")?,
        ctx.testbed.get("EXEC_POD")?,
        ctx.testbed.get("EXEC_CONTAINER")?
    );
    ensure!(
        out.status.success() && String::from_utf8_lossy(&out.stdout) == want,
        "exec routing as {context}: want {want:?}, got {:?} {}",
        out.status,
        text(&out)
    );

    // stdin round-trips (256 KiB, more than any one buffer on the way).
    let input: String = (0..6000)
        .map(|i| format!("{context} line {i:06} abcdefghijklmnopqrstuvwxyz\n"))
        .collect();
    let out = exec(ctx, context, &["-i"], &["cat"], Some(input.as_bytes()))?;
    ensure!(
        out.status.success() && out.stdout == input.as_bytes(),
        "exec -i cat as {context}: {:?}, {} of {} bytes back; stderr: {}",
        out.status,
        out.stdout.len(),
        input.len(),
        short(&String::from_utf8_lossy(&out.stderr))
    );

    // stderr and the exit code come back too.
    let out = exec(
        ctx,
        context,
        &[],
        &["sh", "-c", "echo to-stderr >&2; exit 42"],
        None,
    )?;
    ensure!(
        out.status.code() == Some(42) && String::from_utf8_lossy(&out.stderr).contains("to-stderr"),
        "exec exit 42 as {context}: {:?} {}",
        out.status,
        text(&out)
    );
    Ok(4.0)
}

/// The upgrades went through apigate: `expected` more 101s on the route, and as many
/// upgraded tunnels ended (counted when the splice ends, so waited for briefly).
async fn went_through_apigate(ctx: &Ctx, before: (f64, f64), expected: f64) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let (answered, tunnels) = upgrades(&ctx.gateway.metrics().await?);
        let (answered, tunnels) = (answered - before.0, tunnels - before.1);
        if answered == expected && tunnels == expected {
            return Ok(());
        }
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "apigate counted {answered} upgrades answered 101 and {tunnels} upgraded tunnels \
             on {ROUTE}; want {expected} each"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// alice (client certificate CN alice, O devs + testers): apigate terminates TLS and
/// forwards the upgrade with front-proxy headers. RBAC grants pods/exec only to group
/// devs, so her exec working means the API server saw her groups; carol (CN carol,
/// O testers), who may read pods but not exec, is refused by name on the exec itself.
pub(crate) async fn kubectl_exec_with_client_certificate(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let before = upgrades(&ctx.gateway.metrics().await?);
    let upgraded = exec_round_trips(&ctx, "alice")?;

    // carol: may get pods (so kubectl gets as far as the exec), may not exec.
    kube::apply(
        &ctx.testbed,
        "apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: e2e-carol-pod-reader, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: pod-reader}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: carol}
",
    )?;
    let dir = tempfile::tempdir()?;
    let (cert, key) = ctx
        .testbed
        .issue_client_cert(dir.path(), "carol", &["testers"])?;
    let kubeconfig = dir.path().join("kubeconfig");
    ctx.gateway
        .write_kubeconfig(&ctx.testbed, &kubeconfig, "carol", &cert, &key)?;
    let carol = |args: &[&str]| apigate_e2e::kubectl(&ctx.testbed, &kubeconfig, None, args, None);
    let namespace = ctx.testbed.get("EXEC_NAMESPACE")?;
    let pod = ctx.testbed.get("EXEC_POD")?;
    // RBAC may take a moment to see the new binding.
    let started = Instant::now();
    loop {
        let out = carol(&["get", "pod", "-n", namespace, pod, "-o", "name"])?;
        if out.status.success() {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "carol cannot get the pod: {}",
            text(&out)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = carol(&["exec", "-n", namespace, pod, "--", "echo", "hello"])?;
    let said = text(&out);
    ensure!(
        !out.status.success()
            && said.contains("User \"carol\" cannot create resource \"pods/exec\""),
        "carol's exec should be refused by name: {:?} {said}",
        out.status
    );

    went_through_apigate(&ctx, before, upgraded).await
}

/// bob (bearer token, group devs): the upgrade carries his token to kube-apiserver.
pub(crate) async fn kubectl_exec_with_bearer_token(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let before = upgrades(&ctx.gateway.metrics().await?);
    let upgraded = exec_round_trips(&ctx, "bob")?;
    went_through_apigate(&ctx, before, upgraded).await
}
