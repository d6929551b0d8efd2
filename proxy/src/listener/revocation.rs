//! Closing connections that a new configuration no longer allows.
//!
//! A revoked allowlist entry must not wait for clients to reconnect. Each connection
//! gets a [`KillSwitch`]; a small watcher task re-checks the connection against every
//! new snapshot and trips the switch when its route is gone or no longer allows it. A
//! tripped switch fails the connection's next read or write at once (waking a read
//! that is parked on a quiet watch), which ends it for pingora and for passthrough
//! splices alike.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use apigate_control::RouteId;
use futures_util::task::AtomicWaker;

use super::proxy_header::ClientAddrs;
use crate::state::State;

/// Trips once; wakes whoever waits on the connection.
#[derive(Debug, Default)]
pub struct KillSwitch {
    tripped: AtomicBool,
    read: AtomicWaker,
    write: AtomicWaker,
    waiter: AtomicWaker,
}

impl KillSwitch {
    /// Trip the switch and wake the connection.
    pub fn trip(&self) {
        self.tripped.store(true, Ordering::Release);
        self.read.wake();
        self.write.wake();
        self.waiter.wake();
    }

    /// Whether it tripped.
    pub fn is_tripped(&self) -> bool {
        self.tripped.load(Ordering::Acquire)
    }

    /// For `poll_read`: true when tripped; otherwise registers the waker.
    pub fn poll_read_tripped(&self, cx: &mut Context<'_>) -> bool {
        self.read.register(cx.waker());
        self.is_tripped()
    }

    /// For `poll_write`: true when tripped; otherwise registers the waker.
    pub fn poll_write_tripped(&self, cx: &mut Context<'_>) -> bool {
        self.write.register(cx.waker());
        self.is_tripped()
    }

    /// Resolves when tripped.
    pub async fn tripped(&self) {
        std::future::poll_fn(|cx| {
            self.waiter.register(cx.waker());
            if self.is_tripped() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

/// Aborts the watcher task when the connection ends.
#[derive(Debug)]
pub struct Watcher(tokio::task::JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Watch new snapshots for this connection; trip `kill` when it loses its permission.
pub fn watch(
    state: Arc<State>,
    listener: Arc<str>,
    route: RouteId,
    addrs: ClientAddrs,
    kill: Arc<KillSwitch>,
) -> Watcher {
    let mut revisions = state.subscribe();
    Watcher(tokio::spawn(async move {
        while revisions.changed().await.is_ok() {
            let active = state.load();
            let reason = match active.route(&route) {
                None => Some("route_removed"),
                Some(runtime) => {
                    let decision = runtime
                        .route
                        .access
                        .decide(addrs.direct.ip(), addrs.remote.ip());
                    (!decision.allowed()).then_some("acl_revoked")
                }
            };
            if let Some(reason) = reason {
                state
                    .metrics
                    .revoked
                    .with_label_values(&[&*listener, reason])
                    .inc();
                tracing::info!(listener = %listener, route = %route, client = %addrs.remote.ip(), reason, "closing connection after configuration change");
                kill.trip();
                return;
            }
        }
    }))
}
