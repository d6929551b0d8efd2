//! A terminated TLS connection as the HTTP engine (pingora) sees it.
//!
//! apigate runs its own accept path (ClientHello → route → TLS) and hands the finished
//! stream to pingora's HTTP engine. [`Conn`] implements pingora's transport traits; the
//! per-connection [`ConnCtx`] rides along in the stream's proxy digest, where the HTTP
//! hooks read it for every request or stream.
//!
//! Below the engine, [`Conn`] enforces what the engine does not:
//! - **every request head within `requestHeaderTimeout`**: on HTTP/1.1 from the first
//!   byte of each head (the first head from the handshake), on HTTP/2 from the first
//!   frame of each header block to its END_HEADERS. The engine's own read timeout
//!   restarts with every byte, so without this a head trickled byte by byte holds the
//!   connection forever;
//! - **every HTTP/1.1 head within `maxRequestHeaderBytes`**: a larger one gets apigate's
//!   431 and the connection closes before anything is parsed or forwarded (HTTP/2 header
//!   lists are bounded by the HTTP/2 layer's own setting);
//! - **apigate's responses only**: where the engine answers an unparseable HTTP/1.1
//!   request with a response of its own, before any request reached apigate's hooks,
//!   the transport writes apigate's kube `Status` instead;
//! - **HTTP/2 abuse**: frames a client sends without asking for anything (stream
//!   resets, control frames) are bounded per second ([`super::h2_guard`]); beyond the
//!   bound apigate writes a GOAWAY `ENHANCE_YOUR_CALM` between the engine's frames and
//!   closes the connection;
//! - **dead HTTP/2 clients**: after `keepaliveInterval` of silence apigate sends a PING
//!   ([`super::h2_keepalive`]); a client that answers nothing within
//!   `keepaliveTimeout` is closed;
//! - **revocation**: a tripped [`KillSwitch`] fails the next read or write at once.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use apigate_control::snapshot::Http2Settings;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;

use super::h1_head::{HeadScanner, Scan};
use super::h2_frames::{Boundary, FrameTracker};
use super::h2_guard::{Abuse, H2Guard, ENHANCE_YOUR_CALM};
use super::h2_keepalive::{self, Keepalive, Tick};
use super::prefixed::PrefixedStream;
use super::registry::Registration;
use super::{ClientAuth, ConnCtx, KillSwitch};
use crate::rejection::Rejection;

/// Bounds on request heads, from the route's settings.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Largest HTTP/1.1 request head.
    pub max_bytes: usize,
    /// Time allowed for one head or header block.
    pub timeout: Duration,
}

/// What the transport refused, for its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// A request head refused: why (`timeout`, `too_large`, `malformed`) and the
    /// status answered (0: none, the connection was closed).
    Head {
        /// The reason label.
        reason: &'static str,
        /// The status of apigate's answer.
        status: u16,
    },
    /// An HTTP/2 connection closed for abuse.
    Http2(Abuse),
    /// An HTTP/2 client that did not answer a keepalive PING.
    KeepaliveTimeout,
}

/// Counts what the transport refused.
pub type Cuts = Arc<dyn Fn(Cut) + Send + Sync>;

/// Where the client side of the connection is, HTTP/1.1.
#[derive(Debug)]
enum H1Phase {
    /// A head is arriving (the deadline runs).
    Head(HeadScanner),
    /// A head is complete; the engine and apigate's hooks handle its request. The
    /// number is how many heads this connection has completed.
    Request(u64),
    /// The hooks finished the last request; the next byte starts a new head.
    Idle,
}

#[derive(Debug)]
enum Protocol {
    H1(H1Phase),
    H2(Box<H2State>),
}

/// What the transport follows of an HTTP/2 connection.
#[derive(Debug)]
struct H2State {
    /// Client → server frames.
    frames: FrameTracker,
    /// Server → client frames: where apigate may put a frame of its own.
    out: FrameTracker,
    guard: H2Guard,
    keepalive: Keepalive,
    /// When the keepalive next looks at the connection; polled while reads wait.
    timer: Pin<Box<Sleep>>,
    /// A keepalive PING being written, and how much of it is.
    ping: Option<([u8; 17], usize)>,
}

/// What the write side does.
enum Writes {
    /// Pass the engine's bytes through.
    Through,
    /// Write apigate's response (then close); whatever the engine writes is dropped.
    Own { bytes: Bytes, written: usize },
}

/// A terminated client connection handed to pingora.
pub struct Conn {
    tls: TlsStream<PrefixedStream>,
    /// Tripped when a new configuration no longer allows this connection.
    kill: Arc<KillSwitch>,
    /// Keeps the connection registered for revocation while it lives.
    _registration: Registration,
    fd: UniqueIDType,
    ctx: Arc<ConnCtx>,
    alpn: ALPN,
    ssl_digest: Arc<SslDigest>,
    socket_digest: Arc<SocketDigest>,
    proxy_digest: Arc<ProxyDigest>,
    protocol: Protocol,
    limits: HeadLimits,
    /// Deadline of the head in progress; polled only while `armed`.
    deadline: Pin<Box<Sleep>>,
    armed: bool,
    writes: Writes,
    refused: Cuts,
}

impl Conn {
    /// Wrap a finished TLS stream. The first request head is due within
    /// `limits.timeout` from now; an HTTP/2 client is held to `http2`'s bounds.
    pub fn new(
        tls: TlsStream<PrefixedStream>,
        ctx: Arc<ConnCtx>,
        (limits, http2): (HeadLimits, &Http2Settings),
        kill: Arc<KillSwitch>,
        registration: Registration,
        refused: Cuts,
    ) -> io::Result<Self> {
        use std::os::fd::AsRawFd;
        let (stream, session) = tls.get_ref();
        let fd = stream.tcp().as_raw_fd();
        let (alpn, protocol) = match session.alpn_protocol() {
            Some(b"h2") => (
                ALPN::H2,
                Protocol::H2(Box::new(H2State {
                    frames: FrameTracker::new(),
                    out: FrameTracker::outbound(),
                    guard: H2Guard::new(http2),
                    keepalive: Keepalive::new(http2.keepalive_interval, http2.keepalive_timeout),
                    timer: Box::pin(tokio::time::sleep(http2.keepalive_interval)),
                    ping: None,
                })),
            ),
            _ => (ALPN::H1, Protocol::H1(H1Phase::Head(HeadScanner::new()))),
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
            _registration: registration,
            fd,
            ctx,
            alpn,
            ssl_digest,
            socket_digest: Arc::new(socket_digest),
            proxy_digest,
            protocol,
            limits,
            deadline: Box::pin(tokio::time::sleep(limits.timeout)),
            armed: true,
            writes: Writes::Through,
            refused,
        })
    }

    fn arm(&mut self) {
        if !self.armed {
            self.armed = true;
            let at = tokio::time::Instant::now() + self.limits.timeout;
            self.deadline.as_mut().reset(at);
        }
    }

    /// Account for `bytes` just read from the client; returns how many of them, at
    /// their front, the engine is to read (the ACKs of apigate's PINGs are taken out).
    /// An error ends the connection.
    fn observe(&mut self, bytes: &mut [u8]) -> io::Result<usize> {
        let Protocol::H2(h2) = &mut self.protocol else {
            return self.observe_h1(bytes).map(|()| bytes.len());
        };
        let H2State {
            frames,
            out,
            guard,
            keepalive,
            timer,
            ..
        } = &mut **h2;
        if let Some(next) = keepalive.heard() {
            timer.as_mut().reset(Instant::now() + next);
        }
        let (mut started, mut ended) = (false, false);
        let (mut now, mut abuse) = (None, None);
        let mut acks = Vec::new();
        let chunk = &*bytes;
        frames.feed(chunk, |boundary| match boundary {
            Boundary::Frame(head, Some(start)) if h2_keepalive::is_our_ack(&head, chunk, start) => {
                acks.push(start);
            }
            Boundary::Frame(head, _) if abuse.is_none() => {
                let now = *now.get_or_insert_with(Instant::now);
                abuse = guard.inbound(head, now).err();
            }
            Boundary::Frame(..) | Boundary::GoAway(_) => {}
            Boundary::Started => started = true,
            Boundary::Ended => ended = true,
        });
        if let Some(abuse) = abuse {
            (self.refused)(Cut::Http2(abuse));
            self.armed = false;
            // Between two of the engine's frames only; inside one, the connection
            // closes without it (the engine writes whole frames, so this is rare).
            if out.at_frame_boundary() {
                self.writes = Writes::Own {
                    bytes: guard.goaway(abuse).into(),
                    written: 0,
                };
            }
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("HTTP/2 client closed: {}", abuse.label()),
            ));
        }
        let open = frames.block_open();
        if ended {
            self.armed = false;
        }
        if started && open {
            // The first block keeps the deadline that started at the handshake.
            self.arm();
        }
        Ok(h2_keepalive::strip(bytes, &acks))
    }

    /// While reads wait: the keepalive's timer, and its PING. An error when the client
    /// did not answer.
    fn poll_keepalive(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if matches!(self.writes, Writes::Own { .. }) {
            return None;
        }
        let Protocol::H2(h2) = &mut self.protocol else {
            return None;
        };
        let H2State {
            out,
            keepalive,
            timer,
            ping,
            ..
        } = &mut **h2;
        while timer.as_mut().poll(cx).is_ready() {
            let next = match keepalive.tick(out.at_frame_boundary() && ping.is_none()) {
                Tick::Wait(next) => next,
                Tick::Ping(next) => {
                    *ping = Some((h2_keepalive::ping_frame(), 0));
                    next
                }
                Tick::Dead => {
                    (self.refused)(Cut::KeepaliveTimeout);
                    return Some(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "HTTP/2 client did not answer a PING within keepaliveTimeout",
                    ));
                }
            };
            timer.as_mut().reset(Instant::now() + next);
        }
        match self.poll_ping(cx) {
            Poll::Ready(Err(e)) => Some(e),
            _ => None,
        }
    }

    /// Write the keepalive PING in progress, if any, before anything else.
    fn poll_ping(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Protocol::H2(h2) = &mut self.protocol else {
            return Poll::Ready(Ok(()));
        };
        let ping = &mut h2.ping;
        while let Some((frame, written)) = ping {
            if *written == frame.len() {
                *ping = None;
                return Pin::new(&mut self.tls).poll_flush(cx);
            }
            match Pin::new(&mut self.tls).poll_write(cx, &frame[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    fn observe_h1(&mut self, bytes: &[u8]) -> io::Result<()> {
        let finished = self.ctx.finished();
        let Protocol::H1(phase) = &mut self.protocol else {
            return Ok(());
        };
        if let H1Phase::Request(heads) = phase {
            if finished >= *heads {
                *phase = H1Phase::Idle;
            }
        }
        let new_head = matches!(phase, H1Phase::Idle) && !bytes.is_empty();
        if new_head {
            *phase = H1Phase::Head(HeadScanner::new());
        }
        let scan = match phase {
            H1Phase::Head(scanner) => scanner.feed(bytes, self.limits.max_bytes),
            H1Phase::Request(_) | H1Phase::Idle => return Ok(()),
        };
        if new_head {
            self.arm();
        }
        match scan {
            Scan::Partial => Ok(()),
            Scan::Complete(_) => {
                self.protocol = Protocol::H1(H1Phase::Request(finished + 1));
                self.armed = false;
                Ok(())
            }
            Scan::TooLarge => {
                let answer = Rejection::HeaderTooLarge(self.limits.max_bytes);
                (self.refused)(Cut::Head {
                    reason: "too_large",
                    status: answer.code(),
                });
                self.armed = false;
                self.writes = Writes::Own {
                    bytes: answer.http1_response(),
                    written: 0,
                };
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "request head larger than maxRequestHeaderBytes",
                ))
            }
        }
    }

    /// The head deadline, if armed: registers the waker, and the error once it passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if !self.armed || self.deadline.as_mut().poll(cx).is_pending() {
            return None;
        }
        self.armed = false;
        (self.refused)(Cut::Head {
            reason: "timeout",
            status: 0,
        });
        Some(io::Error::new(
            io::ErrorKind::TimedOut,
            "request headers not received in time",
        ))
    }

    /// Write as much of apigate's own response as the socket takes.
    fn poll_own(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let Writes::Own { bytes, written } = &mut self.writes else {
                return Poll::Ready(Ok(()));
            };
            if *written >= bytes.len() {
                return Pin::new(&mut self.tls).poll_flush(cx);
            }
            match Pin::new(&mut self.tls).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Bytes the socket took from the engine: on HTTP/2, whole frames earn the
    /// client's WINDOW_UPDATEs, and tell where a frame of apigate's own may go.
    fn sent(&mut self, bytes: &[u8]) {
        if let Protocol::H2(h2) = &mut self.protocol {
            let H2State { out, guard, .. } = &mut **h2;
            let mut calm = false;
            out.feed(bytes, |boundary| match boundary {
                Boundary::Frame(head, _) => guard.outbound(head),
                Boundary::GoAway(code) => calm |= code == ENHANCE_YOUR_CALM,
                Boundary::Started | Boundary::Ended => {}
            });
            if calm {
                (self.refused)(Cut::Http2(Abuse::Http2Layer));
            }
        }
    }

    /// Fail a read with `error`. On HTTP/2 apigate's GOAWAY is written first: the
    /// HTTP/2 layer drops a connection whose reads fail without writing anything more.
    fn fail_read(&mut self, cx: &mut Context<'_>, error: io::Error) -> Poll<io::Result<()>> {
        if matches!(self.protocol, Protocol::H2(_)) && self.poll_own(cx).is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(Err(error))
    }

    /// A response head written while no request is in apigate's hooks can only be the
    /// engine's own error for an unparseable HTTP/1.1 request: apigate answers instead.
    fn substitutes(&mut self, buf: &[u8]) -> bool {
        if matches!(self.writes, Writes::Own { .. }) {
            return true;
        }
        let engine_error = matches!(self.protocol, Protocol::H1(_))
            && buf.starts_with(b"HTTP/1.")
            && !self.ctx.in_request();
        if engine_error {
            let code = buf
                .get(9..12)
                .and_then(|c| std::str::from_utf8(c).ok())
                .and_then(|c| c.parse::<u16>().ok())
                .unwrap_or(400);
            let answer = Rejection::for_unparsed_request(code);
            (self.refused)(Cut::Head {
                reason: "malformed",
                status: answer.code(),
            });
            self.writes = Writes::Own {
                bytes: answer.http1_response(),
                written: 0,
            };
        }
        engine_error
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
        if matches!(this.writes, Writes::Own { .. }) {
            let refused = io::Error::new(io::ErrorKind::InvalidData, "request refused");
            return this.fail_read(cx, refused);
        }
        if let Some(e) = this.poll_deadline(cx) {
            return Poll::Ready(Err(e));
        }
        loop {
            let before = buf.filled().len();
            match Pin::new(&mut this.tls).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {}
                Poll::Pending => {
                    if let Some(e) = this.poll_keepalive(cx) {
                        return this.fail_read(cx, e);
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
            let read = buf.filled().len() - before;
            if read == 0 {
                return Poll::Ready(Ok(()));
            }
            let new = buf.filled_mut().get_mut(before..).unwrap_or_default();
            let kept = match this.observe(new) {
                Ok(kept) => kept,
                Err(e) => return this.fail_read(cx, e),
            };
            buf.set_filled(before + kept);
            // The deadline may have been armed by these bytes: register its waker.
            if let Some(e) = this.poll_deadline(cx) {
                return Poll::Ready(Err(e));
            }
            // Only the ACK of apigate's PING: nothing for the engine, read on (an empty
            // read would be the end of the stream).
            if kept > 0 {
                return Poll::Ready(Ok(()));
            }
        }
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
        if self.substitutes(buf) {
            return Poll::Ready(Ok(buf.len()));
        }
        // A keepalive PING half written goes out whole before the engine's bytes.
        if let Err(e) = ready!(self.poll_ping(cx)) {
            return Poll::Ready(Err(e));
        }
        let written = Pin::new(&mut self.tls).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            self.sent(buf.get(..n).unwrap_or(buf));
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if matches!(self.writes, Writes::Own { .. }) {
            return self.poll_own(cx);
        }
        if let Err(e) = ready!(self.poll_ping(cx)) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if matches!(self.writes, Writes::Own { .. }) {
            match self.poll_own(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
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
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            if self.substitutes(first) {
                return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
            }
        }
        if let Err(e) = ready!(self.poll_ping(cx)) {
            return Poll::Ready(Err(e));
        }
        let written = Pin::new(&mut self.tls).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = written {
            for buf in bufs {
                if n == 0 {
                    break;
                }
                let take = n.min(buf.len());
                self.sent(&buf[..take]);
                n -= take;
            }
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Conn {
    async fn shutdown(&mut self) {
        if let Err(e) = tokio::io::AsyncWriteExt::shutdown(self).await {
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
