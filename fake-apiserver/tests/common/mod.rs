//! A small hyper-based client for the integration tests: TLS (optionally with a client
//! certificate) or plaintext, HTTP/1.1 or HTTP/2, every call bounded by a timeout.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use apigate_fake_apiserver::pki::{Ca, Issued};
use apigate_fake_apiserver::{ReplicaOptions, TlsMaterial};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Upper bound for any single test step.
pub const STEP: Duration = Duration::from_secs(10);

/// Runs `fut` with the [`STEP`] timeout, failing the test when it takes longer.
pub async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, fut)
        .await
        .expect("test step timed out")
}

/// Waits (bounded) until `cond` holds.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + STEP;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The CAs and certificates of a test.
pub struct Pki {
    pub server_ca: Ca,
    pub front_proxy_ca: Ca,
    pub client_ca: Ca,
    pub server: Issued,
}

impl Pki {
    pub fn new() -> Pki {
        let server_ca = Ca::new("server-ca").unwrap();
        let server = server_ca
            .issue_server(&["localhost", "127.0.0.1", "::1"])
            .unwrap();
        Pki {
            server_ca,
            front_proxy_ca: Ca::new("front-proxy-ca").unwrap(),
            client_ca: Ca::new("client-ca").unwrap(),
            server,
        }
    }

    /// Options of a TLS replica trusting both client CAs.
    pub fn options(&self) -> ReplicaOptions {
        ReplicaOptions {
            tls: Some(TlsMaterial::from_issued(&self.server)),
            front_proxy_ca_pem: Some(self.front_proxy_ca.cert_pem()),
            client_ca_pem: Some(self.client_ca.cert_pem()),
            ..ReplicaOptions::default()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    H1,
    H2,
}

/// TLS settings of a client.
pub struct Tls {
    pub config: Arc<rustls::ClientConfig>,
}

impl Tls {
    pub fn new(ca_pem: &str, client_cert: Option<&Issued>, proto: Proto) -> Tls {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let mut config = match client_cert {
            Some(issued) => {
                let chain = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = match proto {
            Proto::H1 => vec![b"http/1.1".to_vec()],
            Proto::H2 => vec![b"h2".to_vec()],
        };
        Tls {
            config: Arc::new(config),
        }
    }
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

/// One client connection.
pub struct Client {
    sender: Sender,
    pub proto: Proto,
    authority: String,
    scheme: &'static str,
    /// The task driving the connection; abort it to close the socket.
    pub driver: JoinHandle<()>,
    /// ALPN protocol the server picked (TLS only).
    pub alpn: Option<Vec<u8>>,
}

impl Client {
    /// Connects to `addr`, over TLS when `tls` is given, speaking `proto`.
    pub async fn connect(addr: SocketAddr, tls: Option<&Tls>, proto: Proto) -> Client {
        let tcp = bounded(TcpStream::connect(addr)).await.unwrap();
        let authority = addr.to_string();
        match tls {
            None => Self::handshake(TokioIo::new(tcp), proto, authority, "http", None).await,
            Some(tls) => {
                let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                let name = ServerName::from(addr.ip());
                let stream = bounded(connector.connect(name, tcp)).await.unwrap();
                let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                Self::handshake(TokioIo::new(stream), proto, authority, "https", alpn).await
            }
        }
    }

    async fn handshake<I>(
        io: TokioIo<I>,
        proto: Proto,
        authority: String,
        scheme: &'static str,
        alpn: Option<Vec<u8>>,
    ) -> Client
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, driver) = match proto {
            Proto::H1 => {
                let (sender, conn) = bounded(hyper::client::conn::http1::handshake(io))
                    .await
                    .unwrap();
                let driver = tokio::spawn(async move {
                    let _ = conn.with_upgrades().await;
                });
                (Sender::H1(sender), driver)
            }
            Proto::H2 => {
                let (sender, conn) = bounded(hyper::client::conn::http2::handshake(
                    TokioExecutor::new(),
                    io,
                ))
                .await
                .unwrap();
                let driver = tokio::spawn(async move {
                    let _ = conn.await;
                });
                (Sender::H2(sender), driver)
            }
        };
        Client {
            sender,
            proto,
            authority,
            scheme,
            driver,
            alpn,
        }
    }

    /// A request builder with the right URI form and Host for this connection.
    pub fn request(&self, method: &str, path: &str) -> http::request::Builder {
        let b = Request::builder().method(method);
        match self.proto {
            Proto::H1 => b.uri(path).header("host", &self.authority),
            Proto::H2 => b.uri(format!("{}://{}{path}", self.scheme, self.authority)),
        }
    }

    /// Sends a request and returns the response with its body still streaming.
    pub async fn send(&mut self, req: Request<Empty<Bytes>>) -> Response<Incoming> {
        match &mut self.sender {
            Sender::H1(s) => {
                bounded(s.ready()).await.unwrap();
                bounded(s.send_request(req)).await.unwrap()
            }
            Sender::H2(s) => {
                bounded(s.ready()).await.unwrap();
                bounded(s.send_request(req)).await.unwrap()
            }
        }
    }

    /// Sends a request and reads the whole body.
    pub async fn call(&mut self, req: Request<Empty<Bytes>>) -> (StatusCode, HeaderMap, Bytes) {
        let resp = self.send(req).await;
        let (parts, body) = resp.into_parts();
        let body = bounded(body.collect()).await.unwrap().to_bytes();
        (parts.status, parts.headers, body)
    }

    /// `GET path` with extra headers.
    pub async fn get(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut b = self.request("GET", path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.call(b.body(Empty::new()).unwrap()).await
    }
}

/// A header as a string ("" when absent).
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}
