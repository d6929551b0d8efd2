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
use crate::state::State;
use crate::upstream::splice::splice;
use crate::upstream::{connect, Failure, NoReplica, Replay, Verdict};

/// Largest upstream response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// Serve an upgrade request on an HTTP/1.1 connection. Returns the status sent, or the
/// rejection to send when nothing was sent to the client yet.
pub(super) async fn serve(
    state: &State,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<u16, Rejection> {
    let (Some(routed), Some(attempts)) = (&ctx.routed, ctx.attempts.as_mut()) else {
        return Err(Rejection::MissingConnectionContext);
    };
    let route = routed.route.clone();
    let conn = routed.conn.clone();
    let identity = routed.identity().cloned();
    let Some(terminate) = route.route.terminate() else {
        return Err(Rejection::RouteGone(route.label.to_string()));
    };
    let timeouts = route.upstream.settings.timeouts;
    let clients = &terminate.upstream.http1;
    // Compile guarantees a front-proxy identity wherever client certificates are
    // verified, so a verified identity always has its client config.
    let config = match (&identity, &clients.front_proxy) {
        (Some(_), Some(config)) => config.clone(),
        (Some(_), None) => {
            return Err(Rejection::Internal(
                "verified client certificate on a route without front-proxy identity".into(),
            ))
        }
        (None, _) => clients.anonymous.clone(),
    };
    let server_name = ServerName::try_from(terminate.upstream.server_name.clone())
        .map_err(|e| Rejection::Internal(e.to_string()))?;
    let dial = |addr| connect::tls(addr, server_name.clone(), config.clone(), timeouts.connect);
    let (mut upstream, _) = attempts.connect(dial).await.map_err(|no| match no {
        NoReplica::NoBackends => Rejection::NoBackend(route.label.to_string()),
        NoReplica::Exhausted { tried } => Rejection::UpstreamUnavailable(format!(
            "{tried} replica(s) of {} failed to connect",
            route.label
        )),
    })?;
    let replay = Replay {
        idempotent: session.req_header().method.is_idempotent(),
        body_replayable: true,
    };
    let head = request_head(session.req_header(), identity.as_ref(), conn.peer.ip())?;

    // From here on the client stream is ours: answers go to it directly.
    let detached = ServerSession::new_http1(Box::new(Detached));
    let taken = std::mem::replace(&mut session.downstream_session, Box::new(detached));
    let ServerSession::H1(v1) = *taken else {
        return Err(Rejection::Internal(
            "upgrade on a non-HTTP/1.1 session".into(),
        ));
    };
    let mut client = v1.into_inner();

    let (status, response) = loop {
        let exchange = async {
            upstream
                .write_all(&head)
                .await
                .map_err(|_| Failure::Reset {
                    before_response: true,
                })?;
            match tokio::time::timeout(timeouts.request, read_head(&mut upstream)).await {
                Ok(Ok(found)) => Ok(found),
                Ok(Err(_)) => Err(Failure::Reset {
                    before_response: true,
                }),
                Err(_) => Err(Failure::ResponseHeaderTimeout),
            }
        };
        let failure = match exchange.await {
            Ok(found) => break found,
            Err(failure) => failure,
        };
        let rejection = match failure {
            Failure::ResponseHeaderTimeout => Rejection::UpstreamTimeout(format!(
                "{}: no response to the upgrade request",
                route.label
            )),
            _ => Rejection::UpstreamUnavailable(format!(
                "{}: the replica closed the upgrade request",
                route.label
            )),
        };
        let next = if attempts.failed(failure, replay) == Verdict::Retry {
            attempts.connect(dial).await.ok()
        } else {
            None
        };
        match next {
            Some((next, _)) => upstream = next,
            None => {
                let _ = client.write_all(&rejection.http1_response()).await;
                let _ = client.shutdown().await;
                return Ok(rejection.code());
            }
        }
    };
    attempts.responded();
    if client.write_all(&response).await.is_err() || client.flush().await.is_err() {
        return Ok(status);
    }
    if status == 101 {
        let end = splice(
            &mut client,
            &mut upstream,
            timeouts.long_running,
            conn.kill.tripped(),
        )
        .await;
        tracing::debug!(route = %route.label, end = end.label(), "upgraded stream ended");
        state
            .metrics
            .tunnels
            .with_label_values(&[&*route.label, "upgrade", end.label()])
            .inc();
    } else {
        // A refused upgrade: relay the rest of the response (the request said
        // `Connection: close`, so the replica ends it).
        let _ = tokio::time::timeout(
            timeouts.request,
            tokio::io::copy(&mut upstream, &mut client),
        )
        .await;
    }
    let _ = client.shutdown().await;
    Ok(status)
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

/// Read a response head; returns the status and every byte read (head and any bytes
/// after it, which belong to the upgraded stream or the body).
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<(u16, BytesMut)> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let status = response.code.unwrap_or(502);
                return Ok((status, buf));
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
        let (status, bytes) = read_head(&mut input).await.unwrap();
        assert_eq!(status, 101);
        assert!(bytes.ends_with(b"spdy-bytes"));
        let mut truncated: &[u8] = b"HTTP/1.1 101 Swi";
        assert!(read_head(&mut truncated).await.is_err());
    }
}
