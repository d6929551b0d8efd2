//! `compare`: the same scenario against several targets (direct, L4 baseline, apigate,
//! HAProxy, ...), one after another so they do not compete for the machine, collected into
//! one [`CompareReport`].

use std::time::Duration;

use crate::report::{CompareReport, COMPARE_SCHEMA};
use crate::runner::{self, RunError, RunPlan};

/// Runs every plan in order with `pause` between them. A target that fails to start (bad
/// local TLS files) stops the comparison; a target that fails at runtime is just a run
/// with errors.
pub async fn compare(plans: &[RunPlan], pause: Duration) -> Result<CompareReport, RunError> {
    let mut runs = Vec::with_capacity(plans.len());
    for (i, plan) in plans.iter().enumerate() {
        if i > 0 && !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        tracing::info!(target = %plan.name, url = %plan.target, "compare: starting run");
        runs.push(runner::run(plan).await?);
    }
    let scenario = plans
        .first()
        .and_then(|p| serde_json::to_value(&*p.scenario).ok())
        .unwrap_or(serde_json::Value::Null);
    let passed = runs.iter().all(|r| r.verdict.passed);
    Ok(CompareReport {
        schema: COMPARE_SCHEMA.to_owned(),
        scenario,
        runs,
        passed,
    })
}
