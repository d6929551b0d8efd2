//! The repository's manifests against a real API server.

use std::sync::Arc;

use anyhow::ensure;
use apigate_e2e::{kube, text};

use super::Ctx;

/// The manifests are accepted by a real API server (`kubectl apply --dry-run=server`).
pub(crate) async fn manifests_apply_with_server_dry_run(ctx: Arc<Ctx>) -> anyhow::Result<()> {
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
