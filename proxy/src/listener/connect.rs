//! The in-cluster CONNECT path (Gardener's port 8443).
//!
//! The shoot's apiserver-proxy and the VPN reach the API server with an HTTP CONNECT
//! whose destination header (default `X-Gardener-Destination`) names it, e.g.
//! `outbound|443||kube-apiserver.<namespace>.svc.cluster.local`. The value must equal a
//! route's destination exactly — Gardener's own filter matches by substring, which lets
//! a crafted value reach a route it merely contains; apigate does not. After `200` the
//! tunnel is handled like a TLS connection for that route, with the route fixed.

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::read::read_more;

/// Largest CONNECT request head accepted.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// A CONNECT request that cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// Not HTTP, not CONNECT, too large, too slow, or the header is missing/repeated.
    #[error("bad CONNECT request: {0}")]
    BadRequest(String),
    /// The destination names no route.
    #[error("unknown destination {0:?}")]
    UnknownDestination(String),
}

impl ConnectError {
    /// Status line sent to the client.
    pub fn status_line(&self) -> &'static str {
        match self {
            ConnectError::BadRequest(_) => "400 Bad Request",
            ConnectError::UnknownDestination(_) => "403 Forbidden",
        }
    }

    /// Metric reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ConnectError::BadRequest(_) => "bad_connect",
            ConnectError::UnknownDestination(_) => "unknown_destination",
        }
    }
}

/// A parsed CONNECT request.
#[derive(Debug)]
pub struct ConnectRequest {
    /// Value of the destination header.
    pub destination: String,
    /// Bytes the client sent after the request head (the start of the tunnel).
    pub rest: BytesMut,
}

/// Read the CONNECT request head; `initial` holds bytes already read.
pub async fn read_request(
    tcp: &mut TcpStream,
    initial: BytesMut,
    header_name: &str,
    deadline: tokio::time::Instant,
) -> Result<ConnectRequest, ConnectError> {
    let mut buf = initial;
    loop {
        if let Some(head) = parse(&buf, header_name)? {
            let rest = buf.split_off(head.length);
            return Ok(ConnectRequest {
                destination: head.destination,
                rest,
            });
        }
        match read_more(tcp, &mut buf, deadline).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(ConnectError::BadRequest(
                    "closed before the request ended".into(),
                ))
            }
            Err(e) => return Err(ConnectError::BadRequest(e.to_string())),
        }
    }
}

/// A complete CONNECT request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Value of the destination header, trimmed.
    pub destination: String,
    /// The head's length in bytes; what follows is the tunnel.
    pub length: usize,
}

/// Parse a complete head from `buf`, or `None` if more bytes are needed. Pure (no I/O),
/// so the reader above and the fuzz target run the same logic; once it answers `Some`
/// or an error, more bytes never change the answer.
pub fn parse(buf: &[u8], header_name: &str) -> Result<Option<Head>, ConnectError> {
    let too_large = || ConnectError::BadRequest("request head too large".into());
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let length = match request.parse(buf) {
        // The bound holds however the bytes arrived: in one read or in many.
        Ok(httparse::Status::Complete(length)) if length > MAX_HEAD => return Err(too_large()),
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(too_large()),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ConnectError::BadRequest(e.to_string())),
    };
    if request.method != Some("CONNECT") {
        return Err(ConnectError::BadRequest(format!(
            "method {:?}, expected CONNECT",
            request.method.unwrap_or_default()
        )));
    }
    let mut values = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(header_name));
    let destination = match (values.next(), values.next()) {
        (Some(h), None) => std::str::from_utf8(h.value)
            .map_err(|_| ConnectError::BadRequest(format!("{header_name} is not text")))?
            .trim()
            .to_string(),
        (None, _) => return Err(ConnectError::BadRequest(format!("no {header_name} header"))),
        (Some(_), Some(_)) => {
            return Err(ConnectError::BadRequest(format!(
                "{header_name} given more than once"
            )))
        }
    };
    if destination.is_empty() {
        return Err(ConnectError::BadRequest(format!("empty {header_name}")));
    }
    Ok(Some(Head {
        destination,
        length,
    }))
}

/// Answer the CONNECT request.
pub async fn respond(tcp: &mut TcpStream, status_line: &str) -> std::io::Result<()> {
    let response = if status_line.starts_with("200") {
        format!("HTTP/1.1 {status_line}\r\n\r\n")
    } else {
        format!("HTTP/1.1 {status_line}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
    };
    tcp.write_all(response.as_bytes()).await?;
    tcp.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "x-gardener-destination";

    fn parsed(text: &str) -> Result<Option<Head>, ConnectError> {
        parse(text.as_bytes(), HEADER)
    }

    #[test]
    fn destination_and_tunnel_bytes_are_split() {
        let text = "CONNECT kube-apiserver:443 HTTP/1.1\r\nHost: x\r\nX-Gardener-Destination: outbound|443||kube-apiserver.ns.svc.cluster.local\r\n\r\n\x16\x03\x01";
        let r = parsed(text).unwrap().unwrap();
        assert_eq!(
            r.destination,
            "outbound|443||kube-apiserver.ns.svc.cluster.local"
        );
        assert_eq!(&text.as_bytes()[r.length..], b"\x16\x03\x01");
    }

    #[test]
    fn incomplete_heads_ask_for_more() {
        assert!(parsed("CONNECT a:443 HTTP/1.1\r\nX-Gard")
            .unwrap()
            .is_none());
    }

    #[test]
    fn the_size_bound_holds_however_the_head_arrives() {
        // A head larger than the bound is refused complete in one read, as it is when
        // it arrives in pieces (the answer must not depend on how TCP split it).
        let padding = "a".repeat(MAX_HEAD);
        let text = format!(
            "CONNECT a:443 HTTP/1.1\r\nX-Pad: {padding}\r\nX-Gardener-Destination: a\r\n\r\n"
        );
        let too_large = Err(ConnectError::BadRequest("request head too large".into()));
        assert_eq!(parsed(&text), too_large);
        assert_eq!(parsed(&text[..MAX_HEAD + 1]), too_large);
        assert_eq!(parsed(&text[..100]), Ok(None));
    }

    #[test]
    fn bad_requests_are_refused() {
        for text in [
            "GET / HTTP/1.1\r\nX-Gardener-Destination: a\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nX-Gardener-Destination: \r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nX-Gardener-Destination: a\r\nx-gardener-destination: b\r\n\r\n",
            "\x16\x03\x01\x00\x00garbage\r\n\r\n",
        ] {
            assert!(matches!(parsed(text), Err(ConnectError::BadRequest(_))), "{text:?}");
        }
    }
}
