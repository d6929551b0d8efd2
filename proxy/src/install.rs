//! The one installer: where every source's compiled configuration, or its rejection,
//! becomes the active state, with one set of metrics and log lines.
//!
//! The file source ([`crate::reload`]) and the Kubernetes source ([`crate::kubernetes`])
//! only load and compile; what a new revision means to an operator — which settings
//! take effect only on restart, the reload counters, the error counters, the log line
//! naming what changed — is decided here once, so the two cannot drift.

use apigate_control::{ConfigError, Snapshot, SnapshotDiff};

use crate::state::State;

/// Where a revision came from (a log field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The configuration file (a change or SIGHUP).
    File,
    /// The cluster's custom resources.
    Kubernetes,
}

impl Origin {
    fn label(self) -> &'static str {
        match self {
            Origin::File => "file",
            Origin::Kubernetes => "kubernetes",
        }
    }
}

/// Route names listed in the install log line at most (counts are always given).
const MAX_NAMED: usize = 20;

/// Make `snapshot` the active configuration: warn about settings that take effect only
/// on restart, swap it in, count it and log what changed.
pub fn install(state: &State, snapshot: Snapshot, origin: Origin) -> SnapshotDiff {
    warn_restart_only(state, &snapshot);
    let diff = state.install(snapshot);
    state.metrics.reloads.with_label_values(&["success"]).inc();
    let names = |ids: &[apigate_control::RouteId]| -> Vec<String> {
        ids.iter()
            .take(MAX_NAMED)
            .map(ToString::to_string)
            .collect()
    };
    tracing::info!(
        source = origin.label(),
        revision = state.load().revision,
        added = diff.added.len(),
        removed = diff.removed.len(),
        changed = diff.changed.len(),
        added_routes = ?names(&diff.added),
        removed_routes = ?names(&diff.removed),
        changed_routes = ?names(&diff.changed),
        gateway_changed = diff.gateway_changed,
        "configuration installed"
    );
    diff
}

/// Count and log a configuration that failed to load or compile; the active one keeps
/// serving.
pub fn reject(state: &State, errors: &[ConfigError], origin: Origin) {
    state.metrics.reloads.with_label_values(&["failure"]).inc();
    for error in errors {
        state
            .metrics
            .config_errors
            .with_label_values(&[error.problem.label()])
            .inc();
        tracing::error!(
            source = origin.label(),
            object = %error.object,
            field = %error.field,
            problem = %error.problem,
            "configuration rejected; the last good configuration keeps serving"
        );
    }
}

fn warn_restart_only(state: &State, snapshot: &Snapshot) {
    let old = state.load();
    let (new, was) = (&snapshot.gateway, &old.snapshot.gateway);
    if new.listeners != was.listeners || new.admin != was.admin {
        tracing::warn!("listener or admin addresses changed; they take effect on restart");
    }
    if new.defaults.timeouts.idle != was.defaults.timeouts.idle
        || new.defaults.max_request_header_bytes > was.defaults.max_request_header_bytes
    {
        tracing::warn!(
            "idleTimeout or a larger maxRequestHeaderBytes takes effect for HTTP/2 connections on restart"
        );
    }
    let (h2, was_h2) = (&new.http2, &was.http2);
    if (
        h2.max_concurrent_streams,
        h2.initial_stream_window,
        h2.initial_connection_window,
        h2.max_pending_reset_streams,
    ) != (
        was_h2.max_concurrent_streams,
        was_h2.initial_stream_window,
        was_h2.initial_connection_window,
        was_h2.max_pending_reset_streams,
    ) {
        tracing::warn!(
            "http2 maxConcurrentStreams, window sizes and maxPendingResetStreams take effect on restart; the abuse bounds apply to new connections now"
        );
    }
}
