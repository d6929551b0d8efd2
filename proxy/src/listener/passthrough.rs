//! Passthrough mode: splice the client's TLS stream to one replica per connection.
//!
//! The L4 status quo, kept for API servers that opt out of termination: the client's
//! certificate reaches kube-apiserver directly. The forwarding core picks the replica
//! with the fewest open passthrough connections and tries others while connecting
//! fails (nothing was sent); the ClientHello bytes already read are replayed first.
//! The splice ends when either side closes, after `longRunningTimeout` of silence in
//! both directions, or when the connection is revoked.

use tokio::io::AsyncWriteExt;

use super::pipeline::Admitted;
use crate::balance::Load;
use crate::state::State;
use crate::upstream::pool::Identity;
use crate::upstream::splice::splice;
use crate::upstream::{connect, Attempts};

/// Splice an admitted passthrough connection to a replica.
pub async fn serve(admitted: Admitted, state: &State) {
    let Admitted {
        stream: mut client,
        route,
        kill,
        registration: _registration,
        ..
    } = admitted;
    let upstream = route.upstream.clone();
    let timeouts = upstream.settings.timeouts;
    // Nothing identifies apigate to the replica in passthrough: the client's own TLS
    // session goes through.
    let mut attempts = Attempts::new(upstream.clone(), Load::Connection, Identity::Anonymous);
    let connected = attempts
        .connect(|addr| connect::tcp(addr, timeouts.connect))
        .await;
    let (mut replica, attempt) = match connected {
        Ok(connected) => connected,
        Err(no) => {
            tracing::warn!(route = %route.label, reason = ?no, "passthrough: no replica reachable");
            return;
        }
    };
    // A connection that stands is all passthrough can know of the replica.
    attempts.responded(None);
    state
        .metrics
        .passthrough_connections
        .with_label_values(&[&*route.label, attempt.backend.label.as_str()])
        .inc();
    let replay = client.take_prefix();
    if replica.write_all(&replay).await.is_err() {
        return;
    }
    let (end, _) = splice(
        client.tcp_mut(),
        &mut replica,
        timeouts.long_running,
        kill.tripped(),
    )
    .await;
    tracing::debug!(route = %route.label, backend = %attempt.backend.addr, end = end.label(), "passthrough connection ended");
    state
        .metrics
        .tunnels
        .with_label_values(&[&*route.label, "passthrough", end.label()])
        .inc();
}
