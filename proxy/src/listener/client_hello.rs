//! Read a TLS ClientHello without answering it, keeping every byte.
//!
//! The route (and with it the allowlist, the certificate, the mode) is known before the
//! handshake proceeds: a denied client never sees a certificate, and a passthrough route
//! can replay the exact bytes to its backend. rustls' `Acceptor` does the parsing, so a
//! ClientHello split over many records or tiny TCP segments is handled like any other.

use bytes::BytesMut;
use tokio::net::TcpStream;

use super::read::read_more;

/// Largest ClientHello accepted (rustls' own limit is in this range too).
const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// What the ClientHello said.
#[derive(Debug)]
pub struct Hello {
    /// SNI, lowercased; `None` when the client sent none.
    pub server_name: Option<String>,
    /// Every byte read from the client so far (to replay).
    pub bytes: BytesMut,
}

/// Why no ClientHello could be read.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    /// Not TLS (plain HTTP, garbage) or a malformed ClientHello.
    #[error("not a TLS ClientHello: {0}")]
    NotTls(String),
    /// The deadline passed first.
    #[error("ClientHello not received in time")]
    Timeout,
    /// The client closed or the socket failed.
    #[error("connection closed before the ClientHello: {0}")]
    Closed(String),
}

/// Parses a ClientHello from the bytes read so far, without I/O, so the reader below
/// and the fuzz target run the same logic. Each call is given every byte read so far;
/// the parser feeds rustls only the ones it has not seen.
#[derive(Default)]
pub struct HelloParser {
    acceptor: rustls::server::Acceptor,
    fed: usize,
}

impl HelloParser {
    /// `Ok(None)` while more bytes are needed; `Ok(Some(sni))` once the ClientHello is
    /// complete (`sni` lowercased, `None` when the client sent none). `bytes` must
    /// start with the bytes given before.
    pub fn parse(&mut self, bytes: &[u8]) -> Result<Option<Option<String>>, HelloError> {
        while self.fed < bytes.len() {
            let mut unfed = &bytes[self.fed..];
            let before = unfed.len();
            match self.acceptor.read_tls(&mut unfed) {
                Ok(0) => break,
                Ok(_) => self.fed += before - unfed.len(),
                Err(e) => return Err(HelloError::NotTls(e.to_string())),
            }
        }
        match self.acceptor.accept() {
            Ok(Some(accepted)) => {
                let server_name = accepted
                    .client_hello()
                    .server_name()
                    .map(str::to_ascii_lowercase);
                return Ok(Some(server_name));
            }
            Ok(None) => {}
            Err((e, _alert)) => return Err(HelloError::NotTls(e.to_string())),
        }
        if bytes.len() > MAX_CLIENT_HELLO {
            return Err(HelloError::NotTls("ClientHello too large".into()));
        }
        Ok(None)
    }
}

/// Read a ClientHello; `initial` holds bytes already read (after a PROXY header).
pub async fn read(
    tcp: &mut TcpStream,
    initial: BytesMut,
    deadline: tokio::time::Instant,
) -> Result<Hello, HelloError> {
    let mut bytes = initial;
    let mut parser = HelloParser::default();
    loop {
        if let Some(server_name) = parser.parse(&bytes)? {
            return Ok(Hello { server_name, bytes });
        }
        match read_more(tcp, &mut bytes, deadline).await {
            Ok(true) => {}
            Ok(false) => return Err(HelloError::Closed("end of stream".into())),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(HelloError::Timeout),
            Err(e) => return Err(HelloError::Closed(e.to_string())),
        }
    }
}
