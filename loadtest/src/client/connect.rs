//! Where and how to connect: the parsed target URL and the [`Endpoint`] that opens a TCP
//! connection and, for https, completes the TLS handshake with the right ALPN.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::error::{ClientError, ErrorKind};
use crate::scenario::Protocol;

/// A target URL: `https://host:port` or `http://host:port` (a path is ignored; the
/// scenario chooses paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `https` or `http`.
    pub https: bool,
    /// Host as written (IPv6 with brackets).
    pub host: String,
    /// Port (default 443/80).
    pub port: u16,
}

/// A target URL that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid target URL {url:?}: {reason}")]
pub struct TargetError {
    url: String,
    reason: &'static str,
}

impl FromStr for Target {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| TargetError {
            url: s.to_owned(),
            reason,
        };
        let uri: http::Uri = s
            .parse()
            .map_err(|_| err("not a URL (expected https://host:port)"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(err("scheme must be https or http")),
        };
        let auth = uri.authority().ok_or_else(|| err("missing host"))?;
        if auth.as_str().contains('@') {
            return Err(err("user info is not supported"));
        }
        let host = auth.host().to_owned();
        if host.is_empty() {
            return Err(err("missing host"));
        }
        let port = auth.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Self { https, host, port })
    }
}

impl Target {
    /// `host:port` as used in `:authority`/`Host`.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    /// Host without IPv6 brackets, for resolving and as default TLS name.
    pub fn bare_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme(), self.authority())
    }
}

/// Any byte stream a connection can run over (plain TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// How to reach a target: address, TLS configuration and protocol. Shared by all
/// connections of a run.
#[derive(Clone)]
pub struct Endpoint {
    /// The target.
    pub target: Target,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// HTTP version spoken on connections from this endpoint.
    pub protocol: Protocol,
    connect_timeout: Duration,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("target", &self.target)
            .field("tls", &self.tls.is_some())
            .field("protocol", &self.protocol)
            .finish()
    }
}

impl Endpoint {
    /// An endpoint; `tls` must be given exactly for https targets.
    pub fn new(
        target: Target,
        tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
        protocol: Protocol,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            target,
            tls: tls.map(|(c, n)| (TlsConnector::from(c), n)),
            protocol,
            connect_timeout,
        }
    }

    /// Opens one connection: TCP connect, then TLS with ALPN check. Each step is bounded
    /// by the connect timeout: a TCP connect that times out is a `connect` error (nothing
    /// answered), a handshake that stalls is a `timeout` (something answered, then hung).
    pub async fn connect(&self) -> Result<Box<dyn Io>, ClientError> {
        let tcp = match tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((self.target.bare_host(), self.target.port)),
        )
        .await
        {
            Err(_) => {
                return Err(ClientError::new(
                    ErrorKind::Connect,
                    format!(
                        "connect to {} timed out after {:?}",
                        self.target, self.connect_timeout
                    ),
                ))
            }
            Ok(Err(e)) => {
                let mut err = ClientError::classify(&e, ErrorKind::Connect);
                // Whatever the OS said, failing to establish TCP is a connect error.
                err.kind = ErrorKind::Connect;
                err.message = format!("connect to {}: {}", self.target, err.message);
                return Err(err);
            }
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        let Some((connector, name)) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let tls =
            match tokio::time::timeout(self.connect_timeout, connector.connect(name.clone(), tcp))
                .await
            {
                Err(_) => {
                    return Err(ClientError::new(
                        ErrorKind::Timeout,
                        format!(
                            "TLS handshake with {} stalled for {:?}",
                            self.target, self.connect_timeout
                        ),
                    ))
                }
                Ok(Err(e)) => {
                    let mut err = ClientError::classify(&e, ErrorKind::Tls);
                    // A failed handshake is a TLS error unless the peer clearly reset the
                    // connection (a backend that resets is a different problem).
                    if err.kind != ErrorKind::Reset {
                        err.kind = ErrorKind::Tls;
                    }
                    err.message = format!("TLS handshake with {}: {}", self.target, err.message);
                    return Err(err);
                }
                Ok(Ok(tls)) => tls,
            };
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let want: &[u8] = match self.protocol {
            Protocol::H2 => b"h2",
            Protocol::H1 => b"http/1.1",
        };
        // No ALPN at all is tolerated for HTTP/1.1 (plenty of servers skip it); HTTP/2
        // over TLS requires it.
        match alpn.as_deref() {
            Some(p) if p == want => {}
            None if self.protocol == Protocol::H1 => {}
            other => {
                return Err(ClientError::new(
                    ErrorKind::Tls,
                    format!(
                        "{} negotiated ALPN {:?}, wanted {}",
                        self.target,
                        other.map(String::from_utf8_lossy),
                        String::from_utf8_lossy(want)
                    ),
                ))
            }
        }
        Ok(Box::new(tls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t: Target = "https://127.0.0.1:6443/ignored"
            .parse()
            .unwrap_or_else(|_| Target {
                https: false,
                host: String::new(),
                port: 0,
            });
        assert_eq!(
            t,
            Target {
                https: true,
                host: "127.0.0.1".into(),
                port: 6443
            }
        );
        assert_eq!(t.authority(), "127.0.0.1:6443");
        let t: Target = "http://[::1]".parse().unwrap_or_else(|_| Target {
            https: true,
            host: String::new(),
            port: 0,
        });
        assert_eq!((t.bare_host(), t.port, t.https), ("::1", 80, false));
        assert!("ftp://x".parse::<Target>().is_err());
        assert!("localhost:80".parse::<Target>().is_err());
        assert!("https://".parse::<Target>().is_err());
    }
}
