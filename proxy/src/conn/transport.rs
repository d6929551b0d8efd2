//! A terminated TLS connection as pingora sees it, and the context it carries.
//!
//! apigate runs its own accept path (ClientHello → route → TLS) and hands the finished
//! stream to pingora's HTTP engine. [`Conn`] implements pingora's transport traits; the
//! per-connection [`ConnCtx`] (route, verified identity, client address) rides along in
//! the stream's proxy digest, where the HTTP hooks read it for every request or stream.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use apigate_control::RouteId;
use async_trait::async_trait;
use pingora::http::ResponseHeader;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Sleep;
use tokio_rustls::server::TlsStream;

use super::prefixed::PrefixedStream;
use super::revocation::{KillSwitch, Watcher};
use crate::http::identity::{Identity, IdentityError};

/// How the client authenticated at the TLS layer.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// No client certificate (bearer token or anonymous requests).
    Anonymous,
    /// A certificate verified against the route's client CA.
    Verified(Identity),
    /// A verified certificate that yields no usable identity; requests get a 400.
    Invalid(IdentityError),
}

/// What every request on a connection needs to know about it.
#[derive(Debug)]
pub struct ConnCtx {
    /// The route the ClientHello (or CONNECT destination) selected.
    pub route_id: RouteId,
    /// The client's TLS authentication.
    pub client: ClientAuth,
    /// The client's address.
    pub peer: SocketAddr,
    request_seen: AtomicBool,
}

impl ConnCtx {
    /// Context of a freshly terminated connection.
    pub fn new(route_id: RouteId, client: ClientAuth, peer: SocketAddr) -> Self {
        ConnCtx {
            route_id,
            client,
            peer,
            request_seen: AtomicBool::new(false),
        }
    }

    /// Called when a request's headers have arrived; ends the request-header deadline.
    pub fn request_started(&self) {
        if !self.request_seen.load(Ordering::Relaxed) {
            self.request_seen.store(true, Ordering::Relaxed);
        }
    }

    fn request_seen(&self) -> bool {
        self.request_seen.load(Ordering::Relaxed)
    }
}

/// A terminated client connection handed to pingora.
pub struct Conn {
    tls: TlsStream<PrefixedStream>,
    /// Tripped when a new configuration no longer allows this connection.
    kill: Arc<KillSwitch>,
    _watcher: Watcher,
    fd: UniqueIDType,
    ctx: Arc<ConnCtx>,
    alpn: ALPN,
    ssl_digest: Arc<SslDigest>,
    socket_digest: Arc<SocketDigest>,
    proxy_digest: Arc<ProxyDigest>,
    /// Until the first request's headers arrive, reads fail once this fires: a client
    /// that connects and never finishes a request cannot hold the connection open.
    header_deadline: Option<Pin<Box<Sleep>>>,
}

impl Conn {
    /// Wrap a finished TLS stream.
    pub fn new(
        tls: TlsStream<PrefixedStream>,
        ctx: Arc<ConnCtx>,
        header_timeout: Duration,
        kill: Arc<KillSwitch>,
        watcher: Watcher,
    ) -> io::Result<Self> {
        use std::os::fd::AsRawFd;
        let (stream, session) = tls.get_ref();
        let fd = stream.tcp().as_raw_fd();
        let alpn = match session.alpn_protocol() {
            Some(b"h2") => ALPN::H2,
            _ => ALPN::H1,
        };
        let cipher = session
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("unknown");
        let version = session
            .protocol_version()
            .and_then(|v| v.as_str())
            .unwrap_or("unknown");
        let organization = match &ctx.client {
            ClientAuth::Verified(identity) => Some(identity.groups.join(",")),
            _ => None,
        };
        let ssl_digest = Arc::new(SslDigest::new(
            cipher,
            version,
            organization,
            None,
            Vec::new(),
        ));
        let socket_digest = SocketDigest::from_raw_fd(fd);
        let _ =
            socket_digest
                .peer_addr
                .set(Some(pingora::protocols::l4::socket::SocketAddr::Inet(
                    ctx.peer,
                )));
        let placeholder =
            ResponseHeader::build(200, Some(0)).map_err(|e| io::Error::other(e.to_string()))?;
        let proxy_digest = Arc::new(ProxyDigest::new(
            Box::new(placeholder),
            Some(Box::new(ctx.clone())),
        ));
        Ok(Conn {
            tls,
            kill,
            _watcher: watcher,
            fd,
            ctx,
            alpn,
            ssl_digest,
            socket_digest: Arc::new(socket_digest),
            proxy_digest,
            header_deadline: Some(Box::pin(tokio::time::sleep(header_timeout))),
        })
    }
}

fn revoked() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection no longer allowed by the configuration",
    )
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("fd", &self.fd)
            .field("route", &self.ctx.route_id)
            .field("peer", &self.ctx.peer)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.kill.poll_read_tripped(cx) {
            return Poll::Ready(Err(revoked()));
        }
        if let Some(deadline) = this.header_deadline.as_mut() {
            if this.ctx.request_seen() {
                this.header_deadline = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request headers not received in time",
                )));
            }
        }
        Pin::new(&mut this.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.kill.poll_write_tripped(cx) {
            return Poll::Ready(Err(revoked()));
        }
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.kill.poll_write_tripped(cx) {
            return Poll::Ready(Err(revoked()));
        }
        Pin::new(&mut self.tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Conn {
    async fn shutdown(&mut self) {
        if let Err(e) = AsyncWriteExt::shutdown(&mut self.tls).await {
            tracing::debug!(error = %e, "TLS shutdown failed");
        }
    }
}

impl UniqueID for Conn {
    fn id(&self) -> UniqueIDType {
        self.fd
    }
}

impl Ssl for Conn {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        Some(self.ssl_digest.clone())
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        Some(self.alpn.clone())
    }
}

impl GetTimingDigest for Conn {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl GetProxyDigest for Conn {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        Some(self.proxy_digest.clone())
    }
}

impl GetSocketDigest for Conn {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        Some(self.socket_digest.clone())
    }
}

#[async_trait]
impl Peek for Conn {}
