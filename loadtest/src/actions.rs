//! Timed actions during a run (`--action AT=LABEL=COMMAND`): the faults of a fault run.
//!
//! Each action is a shell command started `AT` after the measured phase began: kill a
//! replica, restart a proxy, rotate a certificate, rewrite a configuration. The runner
//! knows nothing of what the commands do; it records when each ran, how long it took
//! and whether it succeeded, and the report splits the run's requests into the windows
//! between actions ([`crate::report::ActionWindow`]), so a failure is seen next to the
//! action that caused it.

use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::{sleep_until, timeout, Instant};

/// Longest an action's command may run before it is killed and counted as failed.
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(120);

/// One timed action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    /// When, after the measured phase began.
    #[serde(with = "crate::scenario::secs")]
    pub at: Duration,
    /// Name in reports and plots.
    pub label: String,
    /// Run with `sh -c`.
    pub command: String,
}

impl FromStr for Action {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, '=');
        let (Some(at), Some(label), Some(command)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "{s:?}: expected AT=LABEL=COMMAND, e.g. 10s=kill-replica=kill -TERM 1234"
            ));
        };
        let at = crate::units::parse_duration(at.trim()).map_err(|e| format!("{s:?}: AT: {e}"))?;
        let (label, command) = (label.trim(), command.trim());
        if label.is_empty() || command.is_empty() {
            return Err(format!("{s:?}: LABEL and COMMAND must not be empty"));
        }
        Ok(Action {
            at,
            label: label.to_owned(),
            command: command.to_owned(),
        })
    }
}

/// What one action did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionReport {
    /// Its label.
    pub label: String,
    /// When it started, seconds since the measured phase began (`None`: never ran,
    /// because the run ended first).
    pub started_s: Option<f64>,
    /// How long its command ran.
    pub took_s: f64,
    /// Whether the command exited 0 within [`ACTION_TIMEOUT`].
    pub ok: bool,
    /// Why not: the exit status and the end of its standard error.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Run `actions` in order of `at`, one at a time, from `measure_start`; an action due at
/// or after `end` does not run.
pub async fn run(
    mut actions: Vec<Action>,
    measure_start: Instant,
    end: Instant,
) -> Vec<ActionReport> {
    actions.sort_by_key(|a| a.at);
    let mut reports = Vec::with_capacity(actions.len());
    for action in actions {
        let due = measure_start + action.at;
        if due >= end {
            reports.push(ActionReport {
                label: action.label,
                started_s: None,
                took_s: 0.0,
                ok: false,
                detail: "due after the run's end; not run".into(),
            });
            continue;
        }
        sleep_until(due).await;
        let started = Instant::now();
        tracing::info!(action = %action.label, command = %action.command, "action");
        let (ok, detail) = execute(&action.command).await;
        if !ok {
            tracing::warn!(action = %action.label, %detail, "action failed");
        }
        reports.push(ActionReport {
            label: action.label,
            started_s: Some(started.duration_since(measure_start).as_secs_f64()),
            took_s: started.elapsed().as_secs_f64(),
            ok,
            detail,
        });
    }
    reports
}

/// Run `command` with `sh -c`; killed when it outlives [`ACTION_TIMEOUT`].
async fn execute(command: &str) -> (bool, String) {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .output();
    match timeout(ACTION_TIMEOUT, child).await {
        Err(_) => (false, format!("killed after {ACTION_TIMEOUT:?}")),
        Ok(Err(e)) => (false, format!("cannot start sh: {e}")),
        Ok(Ok(out)) if out.status.success() => (true, String::new()),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: String = stderr
                .trim()
                .chars()
                .rev()
                .take(300)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            (false, format!("{}: {tail}", out.status))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse_with_commands_that_contain_equals_signs() {
        let a: Action = "2.5s=reload=FOO=1 touch /tmp/x".parse().unwrap();
        assert_eq!(a.at, Duration::from_millis(2500));
        assert_eq!(a.label, "reload");
        assert_eq!(a.command, "FOO=1 touch /tmp/x");
        for bad in ["10s=kill", "x=kill=true", "10s==true", "10s=kill= "] {
            assert!(bad.parse::<Action>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn actions_run_in_order_and_report_failures() {
        let start = Instant::now();
        let end = start + Duration::from_secs(5);
        let actions = vec![
            "200ms=second=exit 3".parse().unwrap(),
            "0s=first=true".parse().unwrap(),
            "10s=late=true".parse().unwrap(),
        ];
        let reports = run(actions, start, end).await;
        let labels: Vec<_> = reports.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, ["first", "second", "late"]);
        assert!(reports[0].ok);
        assert!(
            !reports[1].ok && reports[1].detail.contains('3'),
            "{:?}",
            reports[1]
        );
        assert!(reports[1].started_s.unwrap() >= 0.2);
        assert_eq!(reports[2].started_s, None, "due after the end");
    }
}
