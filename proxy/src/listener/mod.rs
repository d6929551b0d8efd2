//! The connection pipeline, one stage per module:
//!
//! accept → [`proxy_header`] (PROXY v1/v2 from trusted peers) → on a CONNECT listener,
//! [`connect`] (route from the destination header) → [`client_hello`] (route from SNI
//! unless fixed) → [`access`] (the route's allowlist, before any certificate is sent) →
//! [`passthrough`] splice, or rustls termination and pingora's HTTP engine over [`conn`].
//!
//! Every outcome is counted by reason. Each connection loads the active configuration
//! once for its admission; requests on it load it again (see [`crate::http`]), and
//! [`revocation`] closes it if a later configuration no longer allows it.

pub mod access;
pub mod client_hello;
pub mod conn;
pub mod connect;
pub mod passthrough;
pub mod prefixed;
pub mod proxy_header;
pub mod revocation;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apigate_control::model::{ListenerKind, RouteMode};
use apigate_control::snapshot::Listener;
use pingora::apps::ServerApp;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::LazyConfigAcceptor;

use self::client_hello::HelloError;
use self::conn::{ClientAuth, Conn, ConnCtx};
use self::prefixed::PrefixedStream;
use self::proxy_header::ClientAddrs;
use self::revocation::KillSwitch;
use crate::http::identity::Identity;
use crate::http::Apigate;
use crate::state::{Active, RouteRuntime, State};

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

/// Accept connections until shutdown. `settings` are the listener's settings at start;
/// each connection uses the active configuration's settings for this listener name
/// (trusted proxies may change on reload; the address may not).
pub async fn serve(listener: TcpListener, settings: Listener, ctx: ListenerContext) {
    let name: Arc<str> = settings.name.as_str().into();
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
                let name = name.clone();
                let settings = settings.clone();
                tokio::spawn(async move {
                    let _open =
                        OpenGuard::new(ctx.state.clone(), ctx.connections.clone(), name.clone());
                    handle(tcp, peer, name, settings, ctx).await;
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

async fn handle(
    mut tcp: TcpStream,
    peer: SocketAddr,
    listener: Arc<str>,
    startup: Arc<Listener>,
    ctx: ListenerContext,
) {
    let _ = tcp.set_nodelay(true);
    let active = ctx.state.load();
    let settings = active
        .snapshot
        .gateway
        .listeners
        .iter()
        .find(|l| *l.name == *listener)
        .unwrap_or(&startup);
    let timeouts = active.snapshot.gateway.timeouts;
    let deadline = tokio::time::Instant::now() + timeouts.handshake;
    // Dual-stack listeners see IPv4 clients as ::ffff:a.b.c.d; use the plain form.
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());

    // 1. PROXY protocol.
    let trusted = settings.trusts(peer.ip());
    let (addrs, rest) = match proxy_header::read(
        &mut tcp,
        peer,
        settings.proxy_protocol,
        trusted,
        deadline,
    )
    .await
    {
        Ok(read) => read,
        Err(e) => {
            let addrs = ClientAddrs::direct(peer);
            access::count(&ctx.state, &listener, "none", false, e.reason(), peer.ip());
            access::log_refusal(&listener, e.reason(), &addrs, &e.to_string());
            return;
        }
    };
    let addrs = ClientAddrs {
        direct: addrs.direct,
        remote: SocketAddr::new(addrs.remote.ip().to_canonical(), addrs.remote.port()),
    };

    // 2. On a CONNECT listener the destination header fixes the route.
    let (fixed, rest) = match settings.kind {
        ListenerKind::Tls => (None, rest),
        ListenerKind::Connect => {
            match connect_stage(&mut tcp, &listener, &active, &addrs, rest, deadline, &ctx).await {
                Some((route, rest)) => (Some(route), rest),
                None => return,
            }
        }
    };

    // 3. ClientHello: SNI selects the route unless the CONNECT destination did.
    let hello = match client_hello::read(&mut tcp, rest, deadline).await {
        Ok(hello) => hello,
        Err(e) => {
            let result = match e {
                HelloError::NotTls(_) => "not_tls",
                HelloError::Timeout => {
                    handshake_failure(&ctx, &listener, "timeout");
                    "handshake_timeout"
                }
                HelloError::Closed(_) => "closed_early",
            };
            count(&ctx, &listener, result);
            tracing::debug!(listener = %listener, %peer, error = %e, "no ClientHello");
            return;
        }
    };
    let route = match (fixed, &hello.server_name) {
        (Some(route), _) => route,
        (None, None) => {
            count(&ctx, &listener, "no_sni");
            access::count(
                &ctx.state,
                &listener,
                "none",
                false,
                "no_sni",
                addrs.remote.ip(),
            );
            return;
        }
        (None, Some(sni)) => match active.route_for_sni(sni) {
            Some(route) => route.clone(),
            None => {
                count(&ctx, &listener, "unknown_sni");
                access::count(
                    &ctx.state,
                    &listener,
                    "none",
                    false,
                    "unknown_sni",
                    addrs.remote.ip(),
                );
                access::log_refusal(&listener, "unknown_sni", &addrs, sni);
                return;
            }
        },
    };

    // 4. The route's allowlist, before the handshake goes on.
    if !access::check(&ctx.state, &listener, &route.route, &addrs) {
        count(&ctx, &listener, "denied");
        return;
    }
    let kill = Arc::new(KillSwitch::default());
    let watcher = revocation::watch(
        ctx.state.clone(),
        listener.clone(),
        route.route.id.clone(),
        addrs,
        kill.clone(),
    );
    let stream = PrefixedStream::new(hello.bytes, tcp);
    let sni = hello.server_name.unwrap_or_default();
    let ejection = active.snapshot.gateway.ejection;
    // A long-lived connection must not keep an old configuration alive.
    drop(active);

    // 5. Pass through, or terminate and hand over to the HTTP engine.
    match route.route.mode {
        RouteMode::Passthrough => {
            count(&ctx, &listener, "accepted");
            let _watcher = watcher;
            passthrough::serve(stream, &route, timeouts.connect, ejection, &ctx.state, kill).await;
        }
        RouteMode::Terminate => {
            let guard = (kill, watcher);
            terminate(
                stream, &route, timeouts, addrs, sni, listener, guard, deadline, &ctx,
            )
            .await;
        }
    }
}

/// Read and answer the CONNECT request; the route it names and the tunnel's first bytes.
async fn connect_stage(
    tcp: &mut TcpStream,
    listener: &Arc<str>,
    active: &Active,
    addrs: &ClientAddrs,
    rest: bytes::BytesMut,
    deadline: tokio::time::Instant,
    ctx: &ListenerContext,
) -> Option<(Arc<RouteRuntime>, bytes::BytesMut)> {
    let header = &active.snapshot.gateway.destination_header;
    let request = connect::read_request(tcp, rest, header, deadline)
        .await
        .and_then(
            |request| match active.snapshot.route_for_destination(&request.destination) {
                Some(route) => Ok((route.id.clone(), request)),
                None => Err(connect::ConnectError::UnknownDestination(
                    request.destination,
                )),
            },
        );
    let (route_id, request) = match request {
        Ok(found) => found,
        Err(e) => {
            access::count(
                &ctx.state,
                listener,
                "none",
                false,
                e.reason(),
                addrs.remote.ip(),
            );
            access::log_refusal(listener, e.reason(), addrs, &e.to_string());
            let _ = tokio::time::timeout_at(deadline, connect::respond(tcp, e.status_line())).await;
            return None;
        }
    };
    let route = active.route(&route_id)?.clone();
    // The allowlist is checked before the tunnel opens (and again after the ClientHello).
    if !route
        .route
        .access
        .decide(addrs.direct.ip(), addrs.remote.ip())
        .allowed()
    {
        access::check(&ctx.state, listener, &route.route, addrs);
        let _ = tokio::time::timeout_at(deadline, connect::respond(tcp, "403 Forbidden")).await;
        return None;
    }
    match tokio::time::timeout_at(
        deadline,
        connect::respond(tcp, "200 Connection established"),
    )
    .await
    {
        Ok(Ok(())) => Some((route, request.rest)),
        _ => None,
    }
}

/// Finish the TLS handshake with the route's certificate and serve HTTP.
#[allow(clippy::too_many_arguments)]
async fn terminate(
    stream: PrefixedStream,
    route: &RouteRuntime,
    timeouts: apigate_control::snapshot::Timeouts,
    addrs: ClientAddrs,
    sni: String,
    listener: Arc<str>,
    (kill, watcher): (Arc<KillSwitch>, revocation::Watcher),
    deadline: tokio::time::Instant,
    ctx: &ListenerContext,
) {
    let Some(terminate) = &route.route.terminate else {
        return;
    };
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
    let start = match tokio::time::timeout_at(deadline, acceptor).await {
        Ok(Ok(start)) => start,
        Ok(Err(_)) => {
            count(ctx, &listener, "handshake_failed");
            handshake_failure(ctx, &listener, "protocol");
            return;
        }
        Err(_) => {
            count(ctx, &listener, "handshake_timeout");
            handshake_failure(ctx, &listener, "timeout");
            return;
        }
    };
    let config = terminate.server_tls.clone();
    let tls = match tokio::time::timeout_at(deadline, start.into_stream(config)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let reason = failure_reason(&e);
            count(ctx, &listener, "handshake_failed");
            handshake_failure(ctx, &listener, reason);
            tracing::debug!(listener = %listener, peer = %addrs.remote, sni = %sni, reason, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            count(ctx, &listener, "handshake_timeout");
            handshake_failure(ctx, &listener, "timeout");
            return;
        }
    };

    let client = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        // rustls only returns certificates it verified against the route's client CA.
        Some(leaf) if terminate.client_auth => match Identity::from_certificate(leaf.as_ref()) {
            Ok(identity) => ClientAuth::Verified(identity),
            Err(e) => ClientAuth::Invalid(e),
        },
        _ => ClientAuth::Anonymous,
    };
    count(ctx, &listener, "accepted");
    let conn_ctx = Arc::new(ConnCtx::new(route.route.id.clone(), client, addrs.remote));
    let conn = match Conn::new(tls, conn_ctx, timeouts.request_header, kill, watcher) {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(error = %e, "could not prepare connection");
            return;
        }
    };
    // pingora drives HTTP/1.1 keep-alive or HTTP/2 streams until the connection ends.
    let _ = ctx.app.process_new(Box::new(conn), &ctx.shutdown).await;
}
