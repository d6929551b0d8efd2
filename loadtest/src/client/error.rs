//! Errors of one request, classified by kind so reports can say *what* went wrong
//! (unreachable, TLS, timeout, reset, protocol, HTTP status) without parsing messages.

use std::error::Error as StdError;
use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};

/// What kind of failure a request had. Every failure maps to exactly one kind; the report
/// counts them separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ErrorKind {
    /// TCP connect failed: refused, unreachable, bad address, connect timeout.
    Connect,
    /// TLS handshake failed: unknown CA, wrong name, bad client certificate, no ALPN.
    Tls,
    /// The request did not complete within `--timeout`.
    Timeout,
    /// The connection or stream was reset/closed under the request (RST, GOAWAY, EOF).
    Reset,
    /// The peer spoke broken HTTP.
    Protocol,
    /// The response had a status that does not count as success.
    Status(u16),
    /// Still in flight when the run's grace period after the end ran out.
    Unfinished,
    /// Anything else (should be rare; the message is logged).
    Other,
}

impl ErrorKind {
    /// Stable label used in reports and JSON (`connect`, `tls`, `http_503`, ...).
    pub fn label(&self) -> String {
        match self {
            Self::Connect => "connect".into(),
            Self::Tls => "tls".into(),
            Self::Timeout => "timeout".into(),
            Self::Reset => "reset".into(),
            Self::Protocol => "protocol".into(),
            Self::Status(code) => format!("http_{code}"),
            Self::Unfinished => "unfinished".into(),
            Self::Other => "other".into(),
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// A failed request (or connection attempt), with its kind and a human message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ClientError {
    /// Classification for the report.
    pub kind: ErrorKind,
    /// Detail for logs.
    pub message: String,
    /// The request never reached the server (its connection closed before it was
    /// written), or the server refused it before processing it: an HTTP/2
    /// `REFUSED_STREAM`, or a graceful GOAWAY whose last stream id is below the
    /// request's stream. Any method may be sent again, as Go's HTTP/2 transport
    /// (client-go's) does.
    pub unprocessed: bool,
}

impl ClientError {
    /// An error of a known kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            unprocessed: false,
        }
    }

    /// Classifies an arbitrary error by walking its source chain; `fallback` is used when
    /// nothing in the chain is recognised.
    pub fn classify(err: &(dyn StdError + 'static), fallback: ErrorKind) -> Self {
        Self {
            kind: classify_chain(err).unwrap_or(fallback),
            message: chain_message(err),
            unprocessed: unprocessed(err),
        }
    }
}

/// Whether the error says the request never reached the server: hyper canceled it
/// because its connection closed before it was written (after a graceful GOAWAY, the
/// requests still queued for that connection), or an HTTP/2 error says the server never
/// processed the stream: a `REFUSED_STREAM` reset, or a GOAWAY with `NO_ERROR` (h2 fails
/// only the streams above the GOAWAY's last stream id with it; an error GOAWAY fails
/// processed ones too).
fn unprocessed(err: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    for _ in 0..16 {
        let Some(e) = cur else {
            return false;
        };
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        if let Some(h2) = e.downcast_ref::<::h2::Error>() {
            let reason = h2.reason();
            return (h2.is_remote() && reason == Some(::h2::Reason::REFUSED_STREAM))
                || (h2.is_go_away() && reason == Some(::h2::Reason::NO_ERROR));
        }
        cur = e.source();
    }
    false
}

/// Full message of an error and its sources, `a: b: c`.
fn chain_message(err: &(dyn StdError + 'static)) -> String {
    let mut msg = err.to_string();
    let mut cur = err.source();
    let mut depth = 0;
    while let Some(e) = cur {
        let s = e.to_string();
        if !msg.contains(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        cur = e.source();
        depth += 1;
        if depth > 16 {
            break;
        }
    }
    msg
}

fn classify_io(e: &io::Error) -> Option<ErrorKind> {
    if let Some(inner) = e.get_ref() {
        if inner.downcast_ref::<rustls::Error>().is_some() {
            return Some(ErrorKind::Tls);
        }
        if let Some(k) = classify_chain(inner) {
            return Some(k);
        }
    }
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused
        | K::AddrNotAvailable
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::NotFound => Some(ErrorKind::Connect),
        K::ConnectionReset
        | K::ConnectionAborted
        | K::BrokenPipe
        | K::UnexpectedEof
        | K::NotConnected => Some(ErrorKind::Reset),
        K::TimedOut => Some(ErrorKind::Timeout),
        K::InvalidData => Some(ErrorKind::Protocol),
        _ => None,
    }
}

/// The most specific kind found in the chain: TLS and I/O causes win over the wrapping
/// HTTP library's view.
fn classify_chain(err: &(dyn StdError + 'static)) -> Option<ErrorKind> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    let mut hyper_guess = None;
    let mut depth = 0;
    while let Some(e) = cur {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return Some(ErrorKind::Tls);
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(k) = classify_io(io) {
                return Some(k);
            }
        }
        if let Some(h2) = e.downcast_ref::<::h2::Error>() {
            if let Some(io) = h2.get_io() {
                if let Some(k) = classify_io(io) {
                    return Some(k);
                }
            }
            if h2.is_go_away() || h2.is_reset() || h2.is_remote() {
                return Some(ErrorKind::Reset);
            }
            return Some(ErrorKind::Protocol);
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            hyper_guess = hyper_guess.or(if h.is_timeout() {
                Some(ErrorKind::Timeout)
            } else if h.is_parse() || h.is_parse_status() || h.is_parse_too_large() {
                Some(ErrorKind::Protocol)
            } else if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                Some(ErrorKind::Reset)
            } else {
                None
            });
        }
        cur = e.source();
        depth += 1;
        if depth > 16 {
            break;
        }
    }
    hyper_guess
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_kinds() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            ClientError::classify(&refused, ErrorKind::Other).kind,
            ErrorKind::Connect
        );
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(
            ClientError::classify(&reset, ErrorKind::Other).kind,
            ErrorKind::Reset
        );
        let tls = io::Error::new(io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert_eq!(
            ClientError::classify(&tls, ErrorKind::Other).kind,
            ErrorKind::Tls
        );
        let odd = io::Error::other("strange");
        assert_eq!(
            ClientError::classify(&odd, ErrorKind::Protocol).kind,
            ErrorKind::Protocol
        );
    }

    #[test]
    fn labels() {
        assert_eq!(ErrorKind::Status(503).label(), "http_503");
        assert_eq!(ErrorKind::Connect.to_string(), "connect");
    }
}
