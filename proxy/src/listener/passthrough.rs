//! Passthrough mode: splice the client's TLS stream to one replica per connection.
//!
//! The L4 status quo, kept for API servers that opt out of termination: the client's
//! certificate reaches kube-apiserver directly. The backend is chosen per connection
//! (fewest open connections of two random picks); the ClientHello bytes already read are
//! replayed to it first. A connect failure tries another replica, since nothing was sent.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::prefixed::PrefixedStream;
use super::revocation::KillSwitch;
use crate::balance::health::now_nanos;
use crate::balance::InFlight;
use crate::state::{RouteRuntime, State};
use apigate_control::snapshot::Ejection;
use std::time::Duration;

/// At most this many replicas are tried for one connection.
const MAX_ATTEMPTS: usize = 3;

/// Splice `client` to a replica of `route` until either side closes or `kill` trips.
pub async fn serve(
    mut client: PrefixedStream,
    route: &RouteRuntime,
    connect_timeout: Duration,
    policy: Ejection,
    state: &State,
    kill: Arc<KillSwitch>,
) {
    let mut tried = Vec::new();
    let attempts = route.backends.states.len().min(MAX_ATTEMPTS);
    let (mut upstream, _flight) = loop {
        if tried.len() >= attempts {
            tracing::warn!(route = %route.label, tried = tried.len(), "passthrough: no replica reachable");
            return;
        }
        let Some((backend, _)) = route.backends.pick(now_nanos(), &tried) else {
            return;
        };
        tried.push(backend.addr);
        let flight = InFlight::start(backend.clone(), false);
        match tokio::time::timeout(connect_timeout, TcpStream::connect(backend.addr)).await {
            Ok(Ok(stream)) => {
                backend.health.record_success();
                state
                    .metrics
                    .passthrough_connections
                    .with_label_values(&[route.label.as_str(), backend.label.as_str()])
                    .inc();
                break (stream, flight);
            }
            Ok(Err(_)) | Err(_) => state.backend_failed(&route.label, &backend, &policy, true),
        }
    };
    let _ = upstream.set_nodelay(true);
    let replay = client.take_prefix();
    if upstream.write_all(&replay).await.is_err() {
        return;
    }
    tokio::select! {
        result = tokio::io::copy_bidirectional(client.tcp_mut(), &mut upstream) => {
            if let Err(e) = result {
                tracing::debug!(route = %route.label, error = %e, "passthrough connection ended with an error");
            }
        }
        _ = kill.tripped() => {
            // Revoked: drop both sockets now.
        }
    }
}
