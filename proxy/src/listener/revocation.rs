//! Closing connections that a new configuration no longer allows.
//!
//! A revoked allowlist entry must not wait for clients to reconnect. Each admitted
//! connection is registered under its route ([`crate::conn::registry`]) with a
//! [`KillSwitch`]; at every swap the state re-checks the connections of routes that
//! were removed or whose access policy may have tightened, and trips the switch of
//! each one no longer allowed. A tripped switch fails the connection's next read or
//! write at once (waking a read parked on a quiet watch) and ends upgraded and
//! passthrough splices.
//!
//! Registration closes the window between accept and the end of admission (the PROXY
//! header, CONNECT request and ClientHello can all be trickled for up to
//! `handshakeTimeout`): it registers the connection *first* and then checks it against
//! the *current* configuration, so a configuration installed at any moment is seen by
//! one or the other.

use std::sync::Arc;

use apigate_control::RouteId;

use super::proxy_header::ClientAddrs;
use crate::conn::registry::Registration;
use crate::conn::KillSwitch;
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
) -> Result<(Arc<KillSwitch>, Registration), &'static str> {
    let registered = state.connections.register(
        route.clone(),
        listener,
        addrs.direct.ip(),
        addrs.remote.ip(),
    );
    if let Some(reason) = revoked(&state.load(), &route, &addrs) {
        return Err(reason);
    }
    Ok(registered)
}
