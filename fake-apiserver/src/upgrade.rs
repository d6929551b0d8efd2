//! `exec`, `attach` and `portforward`: HTTP/1.1 upgrades that turn into raw byte streams.
//!
//! kubectl upgrades these requests to WebSocket (`v5.channel.k8s.io`, kubectl ≥ 1.31) or
//! SPDY/3.1. A balancer must pass the upgrade through untouched, so the fake accepts
//! either, answers `101 Switching Protocols` and then echoes every byte back until EOF:
//! a test writes bytes through the proxy and expects them back, no framing needed.

use base64::Engine as _;
use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::handler::{empty, Body};
use crate::server::{wait_shutdown, TaskCtx};

const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const SEC_WEBSOCKET_KEY: &str = "sec-websocket-key";
const SEC_WEBSOCKET_ACCEPT: &str = "sec-websocket-accept";
const SEC_WEBSOCKET_PROTOCOL: &str = "sec-websocket-protocol";
const STREAM_PROTOCOL_VERSION: &str = "x-stream-protocol-version";

/// Why an upgrade request was refused; answered as a 400 `Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused(pub(crate) &'static str);

/// The protocols a client offers, in order, from every occurrence of a
/// comma-separated header.
fn tokens<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub(crate) fn websocket_accept(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{}{WEBSOCKET_GUID}", key.trim()).as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// Builds the `101` for an upgrade request and starts the echo task, or says why not.
pub(crate) fn accept(
    req: &mut Request<Incoming>,
    tasks: &TaskCtx,
) -> Result<Response<Body>, Refused> {
    if req.version() != Version::HTTP_11 {
        return Err(Refused(
            "Upgrade request required (HTTP/1.1 Upgrade: websocket or SPDY/3.1)",
        ));
    }
    let headers = req.headers();
    let chosen = tokens(headers, UPGRADE.as_str())
        .find(|t| t.eq_ignore_ascii_case("websocket") || t.eq_ignore_ascii_case("spdy/3.1"))
        .ok_or(Refused("Upgrade request required"))?;
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        UPGRADE,
        HeaderValue::from_str(chosen).map_err(|_| Refused("invalid Upgrade header"))?,
    );
    if chosen.eq_ignore_ascii_case("websocket") {
        let key = headers
            .get(SEC_WEBSOCKET_KEY)
            .and_then(|v| v.to_str().ok())
            .ok_or(Refused("websocket upgrade without Sec-WebSocket-Key"))?;
        let accept = HeaderValue::from_str(&websocket_accept(key))
            .map_err(|_| Refused("invalid Sec-WebSocket-Key"))?;
        h.insert(SEC_WEBSOCKET_ACCEPT, accept);
        if let Some(p) = tokens(headers, SEC_WEBSOCKET_PROTOCOL).next() {
            if let Ok(v) = HeaderValue::from_str(p) {
                h.insert(SEC_WEBSOCKET_PROTOCOL, v);
            }
        }
    } else if let Some(p) = tokens(headers, STREAM_PROTOCOL_VERSION).next() {
        if let Ok(v) = HeaderValue::from_str(p) {
            h.insert(STREAM_PROTOCOL_VERSION, v);
        }
    }

    let on_upgrade = hyper::upgrade::on(req);
    let tasks = tasks.clone();
    tokio::spawn(async move {
        let TaskCtx {
            tracker: _tracker,
            mut shutdown,
        } = tasks;
        tokio::select! {
            res = echo(on_upgrade) => match res {
                Ok(bytes) => tracing::debug!(bytes, "upgraded stream finished"),
                Err(e) => tracing::debug!(error = %e, "upgraded stream failed"),
            },
            () = wait_shutdown(&mut shutdown) => tracing::debug!("upgraded stream closed by shutdown"),
        }
    });
    Ok(resp)
}

/// Echoes everything read back to the writer, flushing after each read, until EOF.
async fn echo(on_upgrade: OnUpgrade) -> std::io::Result<u64> {
    let upgraded = on_upgrade.await.map_err(std::io::Error::other)?;
    let mut io = TokioIo::new(upgraded);
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        let n = io.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        io.write_all(&buf[..n]).await?;
        io.flush().await?;
        total += n as u64;
    }
    io.shutdown().await?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_example_accept() {
        assert_eq!(
            websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn offered_tokens_are_split() {
        let mut h = HeaderMap::new();
        h.append(UPGRADE, HeaderValue::from_static("h2c, SPDY/3.1"));
        h.append(UPGRADE, HeaderValue::from_static("websocket"));
        let all: Vec<_> = tokens(&h, "upgrade").collect();
        assert_eq!(all, ["h2c", "SPDY/3.1", "websocket"]);
    }
}
