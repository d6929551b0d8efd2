//! The scenarios, by topic, and what they share: the context (testbed + apigate),
//! kubectl helpers, and [`Steps`] for scenarios made of several named steps.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use apigate_e2e::{text, Gateway, Testbed, HOST};
use apigate_test_support::client::H2Client;

mod balancing;
mod exec;
mod fail_closed;
mod failures;
mod flow_control;
mod front_proxy;
mod identity;
mod kubectl;
mod kubernetes_source;
mod manifests;
mod paths;
mod rollout;
mod shared_rollout;

/// What every scenario gets: the testbed and apigate in front of it (file config).
pub(crate) struct Ctx {
    pub(crate) testbed: Testbed,
    pub(crate) gateway: Gateway,
}

pub(crate) type ScenarioFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// A scenario: its name (the filter matches it), its time limit, and its body.
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    pub(crate) limit: Duration,
    pub(crate) run: fn(Arc<Ctx>) -> ScenarioFuture,
}

const LIMIT: Duration = Duration::from_secs(180);

macro_rules! scenario {
    ($module:ident :: $name:ident) => {
        scenario!($module::$name, LIMIT)
    };
    ($module:ident :: $name:ident, $limit:expr) => {
        Scenario {
            name: stringify!($name),
            limit: $limit,
            run: |ctx| Box::pin($module::$name(ctx)),
        }
    };
}

/// Every scenario, in the order they run (sequentially: none overlaps another).
pub(crate) fn all() -> Vec<Scenario> {
    vec![
        // First: it restarts replica 0 and stops its own apigate at the end.
        scenario!(
            kubernetes_source::kubernetes_source,
            Duration::from_secs(300)
        ),
        scenario!(
            fail_closed::kubernetes_source_fails_closed,
            Duration::from_secs(240)
        ),
        scenario!(
            shared_rollout::leader_killed_mid_rollout_continues_from_the_record,
            Duration::from_secs(150)
        ),
        scenario!(
            shared_rollout::a_bad_revision_freezes_and_the_record_says_why,
            Duration::from_secs(150)
        ),
        scenario!(manifests::manifests_apply_with_server_dry_run),
        scenario!(kubectl::kubectl_with_client_certificate),
        scenario!(kubectl::kubectl_with_bearer_token),
        scenario!(flow_control::kubectl_waits_out_a_429_and_retries),
        scenario!(identity::rbac_sees_the_caller),
        scenario!(identity::spoofed_identity_headers_have_no_effect),
        scenario!(exec::kubectl_exec_with_client_certificate),
        scenario!(exec::kubectl_exec_with_bearer_token),
        // Needs all 3 replicas and no other client-certificate traffic meanwhile.
        scenario!(front_proxy::token_and_anonymous_never_use_the_front_proxy_pool),
        scenario!(balancing::one_connection_spreads_over_all_replicas),
        scenario!(balancing::watch_survives_while_requests_flow),
        scenario!(balancing::a_quiet_kubectl_watch_answers_keepalive_pings),
        scenario!(paths::passthrough_with_kubectl),
        scenario!(paths::connect_path_with_kubectl),
        scenario!(rollout::a_bad_revision_freezes_on_the_canary_route),
        scenario!(failures::front_proxy_rotation_under_load_with_a_kubectl_watch),
        // Last: it stops a replica.
        scenario!(failures::graceful_replica_shutdown_under_load),
    ]
}

/// Spoofed identity headers; apigate must drop them whoever sends them.
pub(crate) const SPOOF: [(&str, &str); 5] = [
    ("X-Remote-User", "admin"),
    ("X-Remote-Group", "system:masters"),
    ("X-Remote-Extra-Scopes", "all"),
    ("X-Remote-Uid", "0"),
    ("x-remote-group", "system:masters"),
];

/// The route of [`Gateway`] (file configuration) in apigate's metrics.
pub(crate) const ROUTE: &str = "e2e/testbed";

/// kubectl through apigate as `context`; must succeed; stdout + stderr.
pub(crate) fn kubectl_ok(ctx: &Ctx, context: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = ctx.gateway.kubectl(&ctx.testbed, context, args)?;
    let out = text(&output);
    ensure!(
        output.status.success(),
        "kubectl {args:?} as {context} failed: {out}"
    );
    Ok(out)
}

/// kubectl through apigate as `context`; must be forbidden for `user` by name.
pub(crate) fn kubectl_denied(
    ctx: &Ctx,
    context: &str,
    args: &[&str],
    user: &str,
) -> anyhow::Result<()> {
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

/// One HTTP/2 connection to apigate's terminating route, with `user`'s client
/// certificate or none.
pub(crate) async fn client(ctx: &Ctx, user: Option<&str>) -> anyhow::Result<H2Client> {
    let tls = ctx.testbed.client_tls(user, HOST)?;
    Ok(H2Client::connect(ctx.gateway.address()?, &tls).await?)
}

/// Named steps of one scenario. Each step's outcome is printed as it ends; a failed
/// step does not stop the ones after it, except those that declared they need it
/// (they are skipped, with the reason). [`Steps::finish`] fails the scenario if any
/// step failed or was skipped.
pub(crate) struct Steps {
    outcomes: Vec<(&'static str, Outcome)>,
}

enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

impl Steps {
    pub(crate) fn new() -> Steps {
        Steps {
            outcomes: Vec::new(),
        }
    }

    fn outcome(&self, name: &str) -> Option<&Outcome> {
        self.outcomes
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, o)| o)
    }

    /// Run `step` unless one of `needs` did not pass; true when it passed.
    pub(crate) async fn run(
        &mut self,
        name: &'static str,
        needs: &[&'static str],
        step: impl Future<Output = anyhow::Result<()>>,
    ) -> bool {
        let missing = needs.iter().find_map(|need| match self.outcome(need) {
            Some(Outcome::Passed) => None,
            Some(Outcome::Failed(_)) => Some(format!("needs `{need}`, which failed")),
            Some(Outcome::Skipped(_)) => Some(format!("needs `{need}`, which was skipped")),
            None => Some(format!("needs `{need}`, which did not run")),
        });
        if let Some(why) = missing {
            println!("    step {name} ... skipped ({why})");
            self.outcomes.push((name, Outcome::Skipped(why)));
            return false;
        }
        let started = Instant::now();
        let result = step.await;
        let secs = started.elapsed().as_secs_f64();
        match result {
            Ok(()) => {
                println!("    step {name} ... ok ({secs:.1}s)");
                self.outcomes.push((name, Outcome::Passed));
                true
            }
            Err(e) => {
                println!("    step {name} ... FAILED ({secs:.1}s)\n        {e:#}");
                self.outcomes
                    .push((name, Outcome::Failed(format!("{e:#}"))));
                false
            }
        }
    }

    /// Ok if every step passed; otherwise an error naming the failed and skipped ones.
    pub(crate) fn finish(self) -> anyhow::Result<()> {
        let failed: Vec<String> = self
            .outcomes
            .iter()
            .filter_map(|(name, o)| match o {
                Outcome::Failed(e) => Some(format!("{name}: {e}")),
                _ => None,
            })
            .collect();
        let skipped: Vec<String> = self
            .outcomes
            .iter()
            .filter_map(|(name, o)| match o {
                Outcome::Skipped(why) => Some(format!("{name}: {why}")),
                _ => None,
            })
            .collect();
        if failed.is_empty() && skipped.is_empty() {
            return Ok(());
        }
        let mut report = format!(
            "{} of {} steps failed, {} skipped",
            failed.len(),
            self.outcomes.len(),
            skipped.len()
        );
        for line in &failed {
            report.push_str(&format!("\n      failed: {line}"));
        }
        for line in &skipped {
            report.push_str(&format!("\n      skipped: {line}"));
        }
        bail!(report)
    }
}
