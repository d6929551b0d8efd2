//! A minimal HTTP/2 client: many requests over ONE TLS connection, like client-go.
//!
//! The demo uses it to show that every stream of a single connection is balanced; the
//! integration and end-to-end tests use it as the real HTTP/2 client they drive apigate
//! with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

/// Client errors, with the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Certificates or keys could not be used.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// TCP or TLS connection failed.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// Target.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// HTTP/2 failure.
    #[error("HTTP/2: {0}")]
    Http(#[from] hyper::Error),
    /// Request could not be built.
    #[error("request: {0}")]
    Request(#[from] http::Error),
}

/// TLS settings for the client.
#[derive(Clone)]
pub struct ClientTls {
    /// CA bundle (PEM) that signs the server certificate.
    pub ca_pem: String,
    /// Client certificate and key (PEM), if the client authenticates with one.
    pub client_cert: Option<(String, String)>,
    /// Server name for SNI and verification.
    pub server_name: String,
}

/// One HTTP/2 connection.
#[derive(Clone)]
pub struct H2Client {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
}

/// A response with its body collected.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: http::HeaderMap,
    /// Body bytes.
    pub body: Bytes,
}

/// A response whose body is read as it arrives.
#[derive(Debug)]
pub struct BodyStream {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: http::HeaderMap,
    body: hyper::body::Incoming,
}

impl BodyStream {
    /// The next data chunk as text, or `None` at the end, on error or after `limit`.
    pub async fn next_chunk(&mut self, limit: std::time::Duration) -> Option<String> {
        loop {
            let frame = tokio::time::timeout(limit, self.body.frame())
                .await
                .ok()??
                .ok()?;
            if let Ok(data) = frame.into_data() {
                return Some(String::from_utf8_lossy(&data).into_owned());
            }
        }
    }
}

impl H2Client {
    /// Open one TLS connection negotiating `h2`.
    pub async fn connect(addr: SocketAddr, tls: &ClientTls) -> Result<Self, ClientError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect { addr, source })?;
        Self::over(tcp, tls).await
    }

    /// Run TLS + HTTP/2 over an already connected stream (after a PROXY header or an
    /// HTTP CONNECT, for example).
    pub async fn over(tcp: TcpStream, tls: &ClientTls) -> Result<Self, ClientError> {
        let addr = tcp
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let config = client_config(tls, vec![b"h2".to_vec()])?;
        let name = ServerName::try_from(tls.server_name.clone())
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|source| ClientError::Connect { addr, source })?;
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP/2 client connection ended");
            }
        });
        Ok(H2Client {
            sender,
            authority: tls.server_name.clone(),
        })
    }

    /// The same connection, sending requests for another `:authority` (a host name, an
    /// address, `kubernetes.default.svc`, ...).
    pub fn with_authority(&self, authority: &str) -> H2Client {
        H2Client {
            sender: self.sender.clone(),
            authority: authority.to_string(),
        }
    }

    /// Whether the connection can still carry requests.
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Send a GET with extra headers and collect the response.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<Response, ClientError> {
        self.request(http::Method::GET, path, headers, Bytes::new())
            .await
    }

    /// Send an HTTP/2 `CONNECT` for this connection's authority (RFC 9113 §8.5) and
    /// collect the response.
    pub async fn connect_method(&self) -> Result<Response, ClientError> {
        let request =
            http::Request::connect(self.authority.as_str()).body(Full::new(Bytes::new()))?;
        self.send(request).await
    }

    async fn send(&self, request: http::Request<Full<Bytes>>) -> Result<Response, ClientError> {
        let response = self.sender.clone().send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    /// Send a request with any method and body and collect the response.
    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response, ClientError> {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(format!("https://{}{path}", self.authority));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        self.send(builder.body(Full::new(body))?).await
    }

    /// Send a GET and return as soon as the response headers arrive, with the body
    /// left to read chunk by chunk (watches).
    pub async fn stream(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<BodyStream, ClientError> {
        let mut builder = http::Request::get(format!("https://{}{path}", self.authority));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = self
            .sender
            .clone()
            .send_request(builder.body(Full::new(Bytes::new()))?)
            .await?;
        let (parts, body) = response.into_parts();
        Ok(BodyStream {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    /// Send `count` GETs, `concurrency` at a time, all on this connection; count the
    /// values of `header` in the responses (e.g. the replica id).
    pub async fn spread(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        header: &str,
        count: usize,
        concurrency: usize,
    ) -> Result<BTreeMap<String, usize>, ClientError> {
        let mut counts = BTreeMap::new();
        let mut sent = 0;
        while sent < count {
            let batch = concurrency.max(1).min(count - sent);
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..batch {
                let client = self.clone();
                let path = path.to_string();
                let headers: Vec<(String, String)> = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                tasks.spawn(async move {
                    let refs: Vec<(&str, &str)> = headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    client.get(&path, &refs).await
                });
            }
            while let Some(joined) = tasks.join_next().await {
                let Ok(result) = joined else { continue };
                let response = result?;
                let value = response
                    .headers
                    .get(header)
                    .and_then(|v| v.to_str().ok())
                    .map_or_else(|| format!("(status {})", response.status), str::to_string);
                *counts.entry(value).or_insert(0) += 1;
            }
            sent += batch;
        }
        Ok(counts)
    }
}

/// A rustls client config with ring, the given CA and optional client certificate.
pub fn client_config(
    tls: &ClientTls,
    alpn: Vec<Vec<u8>>,
) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(tls.ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| ClientError::Tls(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| ClientError::Tls(e.to_string()))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(apigate_control::compile::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match &tls.client_cert {
        Some((cert_pem, key_pem)) => {
            let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ClientError::Tls(e.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                .map_err(|e| ClientError::Tls(e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::Tls(e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn;
    Ok(config)
}
