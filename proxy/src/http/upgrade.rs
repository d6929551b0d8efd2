//! HTTP/1.1 upgrades (`kubectl exec/attach/port-forward`: SPDY/3.1 and WebSocket),
//! handled by apigate itself.
//!
//! pingora 0.9's upgrade path races the empty pre-upgrade request body against the
//! `101` response: when the `101` is read first, the end of the (empty) request body is
//! taken for the end of the upgraded stream and the session is closed at once. Under
//! load that closed a few percent of exec sessions in our tests. So apigate takes the
//! client stream out of the HTTP session (pingora's `into_inner`, meant for upgrades),
//! forwards the request itself over a dedicated TLS connection — mTLS with the
//! front-proxy certificate only for verified client certificates, exactly like the
//! pooled path — relays the response head, and after a `101` splices both directions
//! until either side closes or the connection's kill switch trips.
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
use tokio::net::TcpStream;

use super::rejection::Rejection;
use super::RequestCtx;
use crate::balance::health::now_nanos;
use crate::balance::InFlight;
use crate::state::State;

/// Largest upstream response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// At most this many replicas are tried.
const MAX_ATTEMPTS: usize = 3;

/// Serve an upgrade request on an HTTP/1.1 connection. Returns the status sent, or the
/// rejection to send when nothing was sent yet.
pub(super) async fn serve(
    state: &State,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<u16, Rejection> {
    let (Some(route), Some(active)) = (ctx.route.clone(), ctx.active.clone()) else {
        return Err(Rejection::MissingConnectionContext);
    };
    let (Some(terminate), Some(tls)) = (&route.route.terminate, &route.upgrade_tls) else {
        return Err(Rejection::RouteGone(route.label.clone()));
    };
    let timeouts = active.snapshot.gateway.timeouts;
    let policy = active.snapshot.gateway.ejection;
    let config = match (&ctx.identity, &tls.identity) {
        (Some(_), Some(identity)) => identity.clone(),
        (Some(_), None) => return Err(Rejection::Internal("no front-proxy identity".into())),
        (None, _) => tls.anonymous.clone(),
    };
    let server_name = ServerName::try_from(terminate.upstream.server_name.clone())
        .map_err(|e| Rejection::Internal(e.to_string()))?;

    // Connect, trying another replica when one cannot be reached (nothing was sent).
    let attempts = route.backends.states.len().min(MAX_ATTEMPTS);
    let mut upstream = loop {
        if ctx.tried.len() >= attempts {
            return Err(Rejection::UpstreamUnavailable(format!(
                "{} backend(s) of {} failed to connect",
                ctx.tried.len(),
                route.label
            )));
        }
        let Some((backend, _)) = route.backends.pick(now_nanos(), &ctx.tried) else {
            return Err(Rejection::NoBackend(route.label.clone()));
        };
        ctx.tried.push(backend.addr);
        ctx.last_backend = Some(backend.clone());
        ctx.in_flight = Some(InFlight::start(backend.clone(), true));
        let connect = async {
            let tcp = TcpStream::connect(backend.addr).await?;
            let _ = tcp.set_nodelay(true);
            tokio_rustls::TlsConnector::from(config.clone())
                .connect(server_name.clone(), tcp)
                .await
        };
        match tokio::time::timeout(timeouts.connect, connect).await {
            Ok(Ok(stream)) => break stream,
            Ok(Err(_)) | Err(_) => state.backend_failed(&route.label, &backend, &policy, true),
        }
    };

    let head = request_head(session.req_header(), ctx)?;
    // From here on the client stream is ours.
    let detached = ServerSession::new_http1(Box::new(Detached));
    let taken = std::mem::replace(&mut session.downstream_session, Box::new(detached));
    let ServerSession::H1(v1) = *taken else {
        return Err(Rejection::Internal(
            "upgrade on a non-HTTP/1.1 session".into(),
        ));
    };
    let mut client = v1.into_inner();

    if upstream.write_all(&head).await.is_err() {
        return Ok(502);
    }
    let (status, response) =
        match tokio::time::timeout(timeouts.request, read_head(&mut upstream)).await {
            Ok(Ok(found)) => found,
            _ => {
                let _ = client.write_all(&gateway_error(&route.label)).await;
                return Ok(502);
            }
        };
    if let Some(flight) = &ctx.in_flight {
        flight.backend().health.record_success();
    }
    if client.write_all(&response).await.is_err() || client.flush().await.is_err() {
        return Ok(status);
    }
    if status == 101 {
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(route = %route.label, error = %e, "upgraded stream ended with an error");
        }
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

/// The request head sent upstream: identity headers as in the pooled path, and
/// `Connection: Upgrade, close` so a refused upgrade ends with its response.
fn request_head(request: &RequestHeader, ctx: &RequestCtx) -> Result<Vec<u8>, Rejection> {
    let mut request = request.clone();
    // `request_filter` stripped the request before handing it here.
    debug_assert!(!super::identity::has_identity_headers(&request));
    let bad = |e: pingora::BError| Rejection::BadRequest(e.to_string());
    if let Some(identity) = &ctx.identity {
        identity.apply(&mut request).map_err(bad)?;
    }
    if let Some(conn) = &ctx.conn {
        request
            .insert_header("X-Forwarded-For", conn.peer.ip().to_string())
            .map_err(bad)?;
    }
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

fn gateway_error(route: &str) -> Vec<u8> {
    let body =
        Rejection::UpstreamUnavailable(format!("{route}: no response to the upgrade request"))
            .body();
    let mut out = format!(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
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
