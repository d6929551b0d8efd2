//! The accept path: admission, then a passthrough splice or TLS termination.
//!
//! Admission is a typed pipeline ([`pipeline`]): PROXY header ([`proxy_header`], from
//! trusted peers only) → on CONNECT listeners the destination ([`connect`]) →
//! ClientHello ([`client_hello`]) → route → allowlist, before any certificate is sent →
//! registration for revocation ([`revocation`]). Every refusal is counted in one place
//! ([`record`]). An admitted connection is spliced to one replica ([`passthrough`]) or
//! terminated and handed to the HTTP engine ([`terminate`]).

pub mod client_hello;
pub mod connect;
pub mod passthrough;
pub mod pipeline;
pub mod proxy_header;
pub mod read;
pub mod record;
pub mod revocation;
pub mod terminate;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use apigate_control::snapshot::{ConnectionSettings, Listener, Mode};
use pingora::apps::ServerApp;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::net::{TcpListener, TcpStream};

use self::pipeline::Accepted;
use crate::http::Apigate;
use crate::state::State;

/// Tracks open connections so shutdown can wait for them to finish.
#[derive(Debug, Default)]
pub struct Connections {
    open: AtomicUsize,
}

impl Connections {
    /// Connections currently open.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Wait until every connection has closed or `limit` has passed.
    pub async fn drain(&self, limit: Duration) -> usize {
        let wait = async {
            while self.open() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
        self.open()
    }
}

struct OpenGuard {
    state: Arc<State>,
    connections: Arc<Connections>,
    listener: Arc<str>,
}

impl OpenGuard {
    fn new(state: Arc<State>, connections: Arc<Connections>, listener: Arc<str>) -> Self {
        connections.open.fetch_add(1, Ordering::Relaxed);
        state
            .metrics
            .connections_open
            .with_label_values(&[&*listener])
            .inc();
        OpenGuard {
            state,
            connections,
            listener,
        }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.connections.open.fetch_sub(1, Ordering::Relaxed);
        self.state
            .metrics
            .connections_open
            .with_label_values(&[&*self.listener])
            .dec();
    }
}

/// Everything a listener needs.
#[derive(Clone)]
pub struct ListenerContext {
    /// The listener's name.
    pub name: Arc<str>,
    /// Shared proxy state.
    pub state: Arc<State>,
    /// pingora's HTTP engine with apigate's hooks.
    pub engine: Arc<HttpProxy<Apigate>>,
    /// Flips to true on shutdown.
    pub shutdown: ShutdownWatch,
    /// Open-connection tracking.
    pub connections: Arc<Connections>,
}

/// Accept connections until shutdown. `settings` are the listener's settings at start;
/// each connection uses the active configuration's settings for this listener name
/// (trusted proxies may change on reload; the address may not).
pub async fn serve(listener: TcpListener, settings: Listener, ctx: ListenerContext) {
    let settings = Arc::new(settings);
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let ctx = ctx.clone();
                let settings = settings.clone();
                tokio::spawn(async move {
                    let _open = OpenGuard::new(
                        ctx.state.clone(),
                        ctx.connections.clone(),
                        ctx.name.clone(),
                    );
                    handle(tcp, peer, &settings, &ctx).await;
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listener = %ctx.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::info!(listener = %ctx.name, "listener stopped accepting");
}

async fn handle(tcp: TcpStream, peer: SocketAddr, startup: &Listener, ctx: &ListenerContext) {
    let _ = tcp.set_nodelay(true);
    let active = ctx.state.load();
    if let Err(e) = set_keepalive(&tcp, &active.snapshot.gateway.connections) {
        tracing::debug!(error = %e, "could not set TCP keepalive");
    }
    let accepted = Accepted::new(tcp, peer, ctx.name.clone(), startup, active);
    let open = ctx.connections.open();
    let admitted = match pipeline::admit(accepted, &ctx.state, open).await {
        Ok(admitted) => admitted,
        Err(refused) => return record::refused(&ctx.state, &refused),
    };
    let outcome = match admitted.route.route.mode {
        Mode::Passthrough => {
            record::accepted(&ctx.state, &ctx.name);
            passthrough::serve(admitted, &ctx.state).await;
            Ok(())
        }
        Mode::Terminate(_) => terminate::serve(admitted, ctx).await,
    };
    if let Err(refused) = outcome {
        record::refused(&ctx.state, &refused);
    }
}

/// TCP keepalive on a client socket, so that a client whose host vanished is closed by
/// the kernel instead of holding its connection until a silence limit of hours.
fn set_keepalive(tcp: &TcpStream, settings: &ConnectionSettings) -> std::io::Result<()> {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(settings.keepalive_idle)
        .with_interval(settings.keepalive_interval)
        .with_retries(settings.keepalive_probes);
    socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive)
}

/// Stop the HTTP engine's idle HTTP/1.1 keep-alive reads (part of shutdown).
pub async fn stop_idle_reads(engine: &Arc<HttpProxy<Apigate>>) {
    ServerApp::cleanup(engine.as_ref()).await;
}
