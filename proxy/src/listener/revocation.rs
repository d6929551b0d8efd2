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
use crate::conn::registry::{Client, Registration, RoutedBy};
use crate::conn::KillSwitch;
use crate::state::State;

/// Register an admitted connection for revocation; refused with the reason when the
/// current configuration already revokes it.
pub fn register(
    state: &Arc<State>,
    listener: Arc<str>,
    route: RouteId,
    addrs: ClientAddrs,
    routed_by: RoutedBy,
) -> Result<(Arc<KillSwitch>, Registration), &'static str> {
    let client = Client {
        direct: addrs.direct.ip(),
        remote: addrs.remote.ip(),
        routed_by,
        client_chain: None,
    };
    let registered = state
        .connections
        .register(route.clone(), listener, client.clone());
    let active = state.load();
    if let Some(reason) = client.revoked_by(active.route(&route).map(|r| &*r.route)) {
        return Err(reason);
    }
    Ok(registered)
}
