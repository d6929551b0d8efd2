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
use super::record::{Limit, Refusal};
use crate::conn::limits::SourceSlot;
use crate::conn::registry::{Client, Registration, RoutedBy};
use crate::conn::KillSwitch;
use crate::state::State;

/// Register an admitted connection for revocation (holding its source slot while it
/// lives); refused when its route has `connections.maxPerRoute` open, or when the
/// current configuration already revokes it.
pub fn register(
    state: &Arc<State>,
    (listener, route): (Arc<str>, RouteId),
    addrs: ClientAddrs,
    routed_by: RoutedBy,
    source: Option<SourceSlot>,
) -> Result<(Arc<KillSwitch>, Registration), Refusal> {
    let client = Client {
        direct: addrs.direct.ip(),
        remote: addrs.remote.ip(),
        routed_by,
        client_chain: None,
    };
    let per_route = state.load().snapshot.gateway.connections.per_route;
    let registered = state
        .connections
        .register((route.clone(), listener), client.clone(), per_route, source)
        .ok_or(Refusal::OverLimit(Limit::Route))?;
    let active = state.load();
    if let Some(reason) = client.revoked_by(active.route(&route).map(|r| &*r.route)) {
        return Err(Refusal::Revoked(reason));
    }
    Ok(registered)
}
