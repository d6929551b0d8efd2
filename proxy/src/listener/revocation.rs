//! Closing connections that a new configuration no longer allows.
//!
//! A revoked allowlist entry must not wait for clients to reconnect. Each admitted
//! connection gets a [`KillSwitch`] and a small watcher task that re-checks it against
//! every new snapshot and trips the switch when its route is gone or no longer allows
//! it. A tripped switch fails the connection's next read or write at once (waking a
//! read parked on a quiet watch) and ends upgraded and passthrough splices.
//!
//! Registration closes the window between accept and the end of admission (the PROXY
//! header, CONNECT request and ClientHello can all be trickled for up to
//! `handshakeTimeout`): it subscribes to new snapshots *first* and then checks the
//! connection against the *current* one, so a configuration installed at any moment
//! is seen by one or the other.

use std::sync::Arc;

use apigate_control::RouteId;

use super::proxy_header::ClientAddrs;
use crate::conn::{KillSwitch, TaskGuard};
use crate::state::{Active, State};

/// Why `active` no longer allows a connection of `route` from `addrs`, if it doesn't.
fn revoked(active: &Active, route: &RouteId, addrs: &ClientAddrs) -> Option<&'static str> {
    match active.route(route) {
        None => Some("route_removed"),
        Some(runtime) => {
            let decision = runtime
                .route
                .access
                .decide(addrs.direct.ip(), addrs.remote.ip());
            (!decision.allowed()).then_some("acl_revoked")
        }
    }
}

/// Register an admitted connection for revocation; refused with the reason when the
/// current configuration already revokes it.
pub fn register(
    state: &Arc<State>,
    listener: Arc<str>,
    route: RouteId,
    addrs: ClientAddrs,
) -> Result<(Arc<KillSwitch>, TaskGuard), &'static str> {
    let mut revisions = state.subscribe();
    if let Some(reason) = revoked(&state.load(), &route, &addrs) {
        return Err(reason);
    }
    let kill = Arc::new(KillSwitch::default());
    let switch = kill.clone();
    let state = state.clone();
    let task = tokio::spawn(async move {
        while revisions.changed().await.is_ok() {
            if let Some(reason) = revoked(&state.load(), &route, &addrs) {
                state
                    .metrics
                    .revoked
                    .with_label_values(&[&*listener, reason])
                    .inc();
                tracing::info!(listener = %listener, route = %route, client = %addrs.remote.ip(), reason, "closing connection after configuration change");
                switch.trip();
                return;
            }
        }
    });
    Ok((kill, TaskGuard(task)))
}
