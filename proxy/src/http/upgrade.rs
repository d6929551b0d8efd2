//! HTTP/1.1 upgrades (`kubectl exec/attach/port-forward`: SPDY/3.1 and WebSocket),
//! forwarded by apigate itself on top of the forwarding core.
//!
//! pingora 0.9's upgrade path races the empty pre-upgrade request body against the
//! `101` response: when the `101` is read first, the end of the (empty) request body is
//! taken for the end of the upgraded stream and the session is closed at once. Under
//! load that closed a few percent of exec sessions in our tests. So apigate takes the
//! client stream out of the HTTP session (pingora's `into_inner`, meant for upgrades)
//! and forwards the request itself over a dedicated TLS connection — mTLS with the
//! front-proxy certificate only for verified client certificates, exactly like the
//! pooled path — with the same replica choice, retry budget and failure rule
//! ([`crate::upstream`]). After a `101` both directions are spliced until either side
//! closes, both are silent for `longRunningTimeout`, or the connection is revoked.
//!
//! Clients must not send upgraded bytes before the `101` (RFC 6455 §4.1; kubectl
//! waits): bytes pipelined behind the request head would be dropped.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora::proxy::Session;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::{headers, RequestCtx};
use crate::rejection::Rejection;
use crate::state::{RouteRuntime, State};
use crate::upstream::splice::{splice, Moved};
use crate::upstream::Attempts;
use crate::upstream::{connect, Failure, NoReplica, Replay, ShutdownSignal, Verdict};
use apigate_control::snapshot::Timeouts;

/// Largest upstream response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// apigate's own upstream connection for one upgrade: the client config (front-proxy
/// certificate only for verified client certificates), the replicas' name and the
/// timeouts.
struct Target {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    timeouts: Timeouts,
    route: Arc<str>,
}

impl Target {
    fn of(route: &RouteRuntime, verified: bool) -> Result<Target, Rejection> {
        let Some(terminate) = route.route.terminate() else {
            return Err(Rejection::RouteGone(route.label.to_string()));
        };
        let clients = &terminate.upstream.http1;
        // Compile guarantees a front-proxy identity wherever client certificates are
        // verified, so a verified identity always has its client config.
        let config = match (verified, &clients.front_proxy) {
            (true, Some(config)) => config.clone(),
            (true, None) => {
                return Err(Rejection::Internal(
                    "verified client certificate on a route without front-proxy identity".into(),
                ))
            }
            (false, _) => clients.anonymous.clone(),
        };
        let server_name = ServerName::try_from(terminate.upstream.server_name.clone())
            .map_err(|e| Rejection::Internal(e.to_string()))?;
        Ok(Target {
            config,
            server_name,
            timeouts: route.upstream.settings.timeouts,
            route: route.label.clone(),
        })
    }

    /// Connect to a replica, moving on while connecting fails.
    async fn connect(&self, attempts: &mut Attempts) -> Result<Upstream, Rejection> {
        let dial = |addr| {
            connect::tls(
                addr,
                self.server_name.clone(),
                self.config.clone(),
                self.timeouts.connect,
            )
        };
        let (stream, _) = attempts.connect(dial).await.map_err(|no| match no {
            NoReplica::NoBackends => Rejection::NoBackend(self.route.to_string()),
            NoReplica::Exhausted { tried } => Rejection::UpstreamUnavailable(format!(
                "{tried} replica(s) of {} failed to connect",
                self.route
            )),
        })?;
        Ok(stream)
    }

    /// Send the request head and read the response head, on another replica where the
    /// failure rule allows it. On success `upstream` is the connection that answered.
    async fn exchange(
        &self,
        attempts: &mut Attempts,
        upstream: &mut Upstream,
        head: &[u8],
        replay: Replay,
    ) -> Result<Head, Rejection> {
        loop {
            let failure = match self.once(upstream, head).await {
                Ok(found) => return Ok(found),
                Err(failure) => failure,
            };
            let rejection = match failure {
                Failure::ResponseHeaderTimeout => Rejection::UpstreamTimeout(format!(
                    "{}: no response to the upgrade request",
                    self.route
                )),
                _ => Rejection::UpstreamUnavailable(format!(
                    "{}: the replica closed the upgrade request",
                    self.route
                )),
            };
            if attempts.failed(failure, replay) != Verdict::Retry {
                return Err(rejection);
            }
            *upstream = self.connect(attempts).await.map_err(|_| rejection)?;
        }
    }

    async fn once(&self, upstream: &mut Upstream, head: &[u8]) -> Result<Head, Failure> {
        let broken = Failure::Reset {
            before_response: true,
        };
        upstream.write_all(head).await.map_err(|_| broken)?;
        match tokio::time::timeout(self.timeouts.request, read_head(upstream)).await {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(_)) => Err(broken),
            Err(_) => Err(Failure::ResponseHeaderTimeout),
        }
    }
}

type Upstream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// How an upgrade served here ended, for the request's metrics and access log line.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Upgraded {
    /// The status sent to the client.
    pub(super) status: u16,
    /// Bytes moved each way after the response head.
    pub(super) moved: Moved,
    /// Why apigate answered itself, when it did (the answer is already written).
    pub(super) answered: Option<&'static str>,
}

/// Serve an upgrade request on an HTTP/1.1 connection. Returns how it ended, or the
/// rejection to send when nothing was sent to the client yet.
pub(super) async fn serve(
    state: &State,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<Upgraded, Rejection> {
    let (Some(routed), Some(attempts)) = (&ctx.routed, ctx.attempts.as_mut()) else {
        return Err(Rejection::MissingConnectionContext);
    };
    let route = routed.route.clone();
    let conn = routed.conn.clone();
    let identity = routed.identity().cloned();
    let target = Target::of(&route, identity.is_some())?;
    let mut upstream = target.connect(attempts).await?;
    let replay = Replay {
        idempotent: session.req_header().method.is_idempotent(),
        body_replayable: true,
    };
    let head = request_head(session.req_header(), identity.as_ref(), conn.peer.ip())?;
    let audit_id = session
        .req_header()
        .headers
        .get(crate::access_log::AUDIT_ID)
        .cloned();
    // From here on the client stream is ours: answers go to it directly.
    let mut client = take_client(session)?;
    let Head {
        status,
        signal,
        bytes: response,
    } = match target
        .exchange(attempts, &mut upstream, &head, replay)
        .await
    {
        Ok(found) => found,
        Err(rejection) => {
            state
                .metrics
                .rejections
                .with_label_values(&[&*route.label, rejection.label()])
                .inc();
            let answer = rejection.http1_response_for(audit_id.as_ref());
            let _ = client.write_all(&answer).await;
            let _ = client.shutdown().await;
            return Ok(Upgraded {
                status: rejection.code(),
                moved: Moved::default(),
                answered: Some(rejection.label()),
            });
        }
    };
    attempts.responded(signal);
    let mut upgraded = Upgraded {
        status,
        ..Upgraded::default()
    };
    if client.write_all(&response).await.is_err() || client.flush().await.is_err() {
        return Ok(upgraded);
    }
    if status == 101 {
        let revoked = conn.kill.tripped();
        let (end, moved) = splice(
            &mut client,
            &mut upstream,
            target.timeouts.long_running,
            revoked,
        )
        .await;
        tracing::debug!(route = %route.label, end = end.label(), "upgraded stream ended");
        state
            .metrics
            .tunnels
            .with_label_values(&[&*route.label, "upgrade", end.label()])
            .inc();
        upgraded.moved = moved;
    } else {
        // A refused upgrade: relay the rest of the response (the request said
        // `Connection: close`, so the replica ends it).
        let relay = tokio::io::copy(&mut upstream, &mut client);
        if let Ok(Ok(relayed)) = tokio::time::timeout(target.timeouts.request, relay).await {
            upgraded.moved.down = relayed;
        }
    }
    let _ = client.shutdown().await;
    Ok(upgraded)
}

/// Take the client's stream out of the engine's HTTP/1.1 session.
fn take_client(session: &mut Session) -> Result<pingora::protocols::Stream, Rejection> {
    let detached = ServerSession::new_http1(Box::new(Detached));
    let taken = std::mem::replace(&mut session.downstream_session, Box::new(detached));
    match *taken {
        ServerSession::H1(v1) => Ok(v1.into_inner()),
        _ => Err(Rejection::Internal(
            "upgrade on a non-HTTP/1.1 session".into(),
        )),
    }
}

/// The request head sent upstream: the headers apigate owns set as on the pooled path,
/// and `Connection: Upgrade, close` so a refused upgrade ends with its response.
fn request_head(
    request: &RequestHeader,
    identity: Option<&crate::identity::Identity>,
    client: std::net::IpAddr,
) -> Result<Vec<u8>, Rejection> {
    let mut request = request.clone();
    // `request_filter` sanitized the request before handing it here.
    debug_assert!(!headers::has_owned_headers(&request));
    let bad = |e: pingora::BError| Rejection::BadRequest(e.to_string());
    headers::set_upstream(&mut request, identity, client).map_err(bad)?;
    request
        .insert_header("Connection", "Upgrade, close")
        .map_err(bad)?;
    let target = request
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let mut head = format!("{} {target} HTTP/1.1\r\n", request.method).into_bytes();
    for (name, value) in request.headers.iter() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    Ok(head)
}

/// A response head as read: its status, kube-apiserver's shutdown signal if it carries
/// one, and every byte read (head and any bytes after it, which belong to the upgraded
/// stream or the body).
struct Head {
    status: u16,
    signal: Option<ShutdownSignal>,
    bytes: BytesMut,
}

/// Read a response head.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Head> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let status = response.code.unwrap_or(502);
                let signal = ShutdownSignal::in_head(
                    status,
                    response
                        .headers
                        .iter()
                        .map(|h| (h.name.as_bytes(), h.value)),
                );
                return Ok(Head {
                    status,
                    signal,
                    bytes: buf,
                });
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "response head too large",
            ));
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the response head",
            ));
        }
    }
}

/// Stands in for the client stream after it was taken out of pingora's session: reads
/// end, writes vanish, so pingora's wrap-up after the upgrade cannot touch the client.
#[derive(Debug)]
struct Detached;

impl AsyncRead for Detached {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Detached {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[async_trait]
impl Shutdown for Detached {
    async fn shutdown(&mut self) {}
}

impl UniqueID for Detached {
    fn id(&self) -> UniqueIDType {
        -1
    }
}

impl Ssl for Detached {}

impl GetTimingDigest for Detached {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl GetProxyDigest for Detached {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for Detached {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        None
    }
}

#[async_trait]
impl Peek for Detached {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn response_heads_are_read_with_what_follows() {
        let mut input: &[u8] =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\n\r\nspdy-bytes";
        let head = read_head(&mut input).await.unwrap();
        assert_eq!(head.status, 101);
        assert_eq!(head.signal, None);
        assert!(head.bytes.ends_with(b"spdy-bytes"));
        let mut shutdown: &[u8] =
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 5\r\nConnection: close\r\n\r\n";
        let head = read_head(&mut shutdown).await.unwrap();
        assert_eq!(head.signal, Some(ShutdownSignal::Announced));
        let mut truncated: &[u8] = b"HTTP/1.1 101 Swi";
        assert!(read_head(&mut truncated).await.is_err());
    }
}
