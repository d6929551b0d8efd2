//! The TLS listener: accept → ClientHello/SNI → route → TLS handshake → HTTP engine.
//!
//! The route is chosen from the ClientHello before any certificate is sent, so an
//! unknown name is refused during the handshake. Every outcome is counted by reason.
//! Each connection loads the active configuration once for its handshake; requests on
//! it load it again (see [`crate::http`]), so a swap applies to the next request.

pub mod conn;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::apps::ServerApp;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::LazyConfigAcceptor;

use self::conn::{ClientAuth, Conn, ConnCtx};
use crate::http::identity::Identity;
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
        let end = Instant::now() + limit;
        while self.open() > 0 && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
    /// Shared proxy state.
    pub state: Arc<State>,
    /// pingora's HTTP engine with apigate's hooks.
    pub app: Arc<HttpProxy<Apigate>>,
    /// Flips to true on shutdown.
    pub shutdown: ShutdownWatch,
    /// Open-connection tracking.
    pub connections: Arc<Connections>,
}

/// Accept connections until shutdown.
pub async fn serve(listener: TcpListener, name: Arc<str>, ctx: ListenerContext) {
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let ctx = ctx.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    let _open =
                        OpenGuard::new(ctx.state.clone(), ctx.connections.clone(), name.clone());
                    handle(tcp, peer, name, ctx).await;
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::info!(listener = %name, "listener stopped accepting");
}

fn count(ctx: &ListenerContext, listener: &str, result: &str) {
    ctx.state
        .metrics
        .connections
        .with_label_values(&[listener, result])
        .inc();
}

fn handshake_failure(ctx: &ListenerContext, listener: &str, reason: &str) {
    ctx.state
        .metrics
        .tls_handshake_failures
        .with_label_values(&[listener, reason])
        .inc();
}

/// Turn a rustls handshake error into a short metric label.
fn failure_reason(e: &std::io::Error) -> &'static str {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return "io";
    };
    match tls {
        rustls::Error::InvalidCertificate(_) => "bad_client_certificate",
        rustls::Error::NoCertificatesPresented => "no_client_certificate",
        rustls::Error::AlertReceived(_) => "alert_received",
        rustls::Error::PeerIncompatible(_) => "incompatible",
        rustls::Error::InvalidMessage(_) | rustls::Error::PeerMisbehaved(_) => "protocol",
        _ => "other",
    }
}

async fn handle(tcp: TcpStream, peer: SocketAddr, listener: Arc<str>, ctx: ListenerContext) {
    let _ = tcp.set_nodelay(true);
    let active = ctx.state.load();
    let timeouts = active.snapshot.gateway.timeouts;
    let deadline = tokio::time::Instant::now() + timeouts.handshake;

    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
    let start = match tokio::time::timeout_at(deadline, acceptor).await {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => {
            // Not TLS at all: plain HTTP, garbage, a port scanner.
            count(&ctx, &listener, "not_tls");
            tracing::debug!(listener = %listener, %peer, error = %e, "not a TLS ClientHello");
            return;
        }
        Err(_) => {
            count(&ctx, &listener, "handshake_timeout");
            handshake_failure(&ctx, &listener, "timeout");
            return;
        }
    };
    let hello = start.client_hello();
    let Some(sni) = hello.server_name().map(str::to_ascii_lowercase) else {
        count(&ctx, &listener, "no_sni");
        tracing::debug!(listener = %listener, %peer, "ClientHello without SNI refused");
        return;
    };
    let Some(route) = active.route_for_sni(&sni).cloned() else {
        count(&ctx, &listener, "unknown_sni");
        tracing::debug!(listener = %listener, %peer, sni = %sni, "unknown SNI refused");
        return;
    };
    let config = route.route.server_tls.clone();
    let tls = match tokio::time::timeout_at(deadline, start.into_stream(config)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let reason = failure_reason(&e);
            count(&ctx, &listener, "handshake_failed");
            handshake_failure(&ctx, &listener, reason);
            tracing::debug!(listener = %listener, %peer, sni = %sni, reason, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            count(&ctx, &listener, "handshake_timeout");
            handshake_failure(&ctx, &listener, "timeout");
            return;
        }
    };

    let client = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        // rustls only returns certificates it verified against the route's client CA.
        Some(leaf) if route.route.client_auth => match Identity::from_certificate(leaf.as_ref()) {
            Ok(identity) => ClientAuth::Verified(identity),
            Err(e) => ClientAuth::Invalid(e),
        },
        _ => ClientAuth::Anonymous,
    };
    count(&ctx, &listener, "accepted");
    let conn_ctx = Arc::new(ConnCtx::new(
        listener.clone(),
        route.route.id.clone(),
        sni,
        client,
        peer,
    ));
    let conn = match Conn::new(tls, conn_ctx, timeouts.request_header) {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(error = %e, "could not prepare connection");
            return;
        }
    };
    drop(active);
    // pingora drives HTTP/1.1 keep-alive or HTTP/2 streams until the connection ends.
    let _ = ctx.app.process_new(Box::new(conn), &ctx.shutdown).await;
}
