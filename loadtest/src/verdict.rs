//! Pass/fail of a run against the operator's thresholds (`--max-error-rate`,
//! `--max-p99`), which decides the exit code. Pure: report in, verdict out.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::report::RunReport;

/// Exit code when a threshold was missed (0 = met, 1 = could not run, 2 = usage error).
pub const EXIT_THRESHOLD_MISSED: i32 = 3;

/// The thresholds a run must meet; `None` means not checked.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Thresholds {
    /// Highest acceptable error rate (0–1).
    pub max_error_rate: Option<f64>,
    /// Highest acceptable p99 latency.
    pub max_p99: Option<Duration>,
}

/// One threshold check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// `error_rate` or `p99_ms`.
    pub name: String,
    /// The threshold.
    pub limit: f64,
    /// The measured value.
    pub actual: f64,
    /// Whether it was met.
    pub passed: bool,
}

/// Result of all checks; passes when there are none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// All checks passed.
    pub passed: bool,
    /// The individual checks.
    pub checks: Vec<Check>,
}

impl Default for Verdict {
    fn default() -> Self {
        Self {
            passed: true,
            checks: Vec::new(),
        }
    }
}

/// Evaluates `thresholds` on a report. A p99 threshold fails when no request succeeded
/// (there is no p99 to trust).
pub fn evaluate(report: &RunReport, thresholds: &Thresholds) -> Verdict {
    let mut checks = Vec::new();
    if let Some(max) = thresholds.max_error_rate {
        let actual = report.requests.error_rate;
        checks.push(Check {
            name: "error_rate".into(),
            limit: max,
            actual,
            passed: actual <= max,
        });
    }
    if let Some(max) = thresholds.max_p99 {
        let limit = max.as_secs_f64() * 1000.0;
        let actual = report.latency_ms.p99;
        let passed = report.latency_ms.count > 0 && actual <= limit;
        checks.push(Check {
            name: "p99_ms".into(),
            limit,
            actual,
            passed,
        });
    }
    Verdict {
        passed: checks.iter().all(|c| c.passed),
        checks,
    }
}
