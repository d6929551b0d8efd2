//! An API-server front whose faults a test controls: plain HTTP in (for the Kubernetes
//! source's client), the testbed's kube-apiserver over TLS as the admin behind. It
//! answers `403 Forbidden` to the paths it is told to refuse and can cut every open
//! connection (so watches drop and must reconnect). The real API server answers
//! everything else; the front exists to make it answer *badly* on cue.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;

use crate::Testbed;

type Body = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

#[derive(Default)]
struct Faults {
    refused: Vec<String>,
    connections: Vec<tokio::task::AbortHandle>,
}

/// The front; stops when dropped.
pub struct FaultyFront {
    /// Where the source's client connects (`http://`).
    pub address: SocketAddr,
    faults: Arc<Mutex<Faults>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultyFront {
    /// A front to one testbed replica, refusing nothing yet.
    pub async fn start(testbed: &Testbed) -> anyhow::Result<FaultyFront> {
        let upstream = *testbed.replicas()?.first().context("no replica")?;
        let tls = testbed.client_tls(Some("admin"), "kubernetes.default.svc")?;
        let config = apigate_test_support::client::client_config(&tls, vec![b"http/1.1".to_vec()])?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let faults = Arc::new(Mutex::new(Faults::default()));
        let shared = faults.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (connector, faults) = (connector.clone(), shared.clone());
                let connection = tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (connector, faults) = (connector.clone(), faults.clone());
                        async move {
                            Ok::<_, Infallible>(answer(request, upstream, connector, faults).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
                lock(&shared).connections.push(connection.abort_handle());
            }
        });
        Ok(FaultyFront {
            address,
            faults,
            task,
        })
    }

    /// Answer 403 to every path starting with one of `prefixes` (none: refuse nothing).
    pub fn refuse(&self, prefixes: &[&str]) {
        lock(&self.faults).refused = prefixes.iter().map(ToString::to_string).collect();
    }

    /// Close every open connection: watches through the front drop.
    pub fn cut(&self) {
        for connection in std::mem::take(&mut lock(&self.faults).connections) {
            connection.abort();
        }
    }

    /// A Kubernetes client through the front.
    pub fn client(&self) -> anyhow::Result<kube::Client> {
        let config = kube::Config::new(format!("http://{}", self.address).parse()?);
        Ok(kube::Client::try_from(config)?)
    }
}

impl Drop for FaultyFront {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

fn lock(faults: &Mutex<Faults>) -> std::sync::MutexGuard<'_, Faults> {
    faults.lock().unwrap_or_else(|e| e.into_inner())
}

fn status(code: u16, message: &str) -> Response<Body> {
    let body = format!(
        "{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\",\"message\":\"{message}\",\"reason\":\"Forbidden\",\"code\":{code}}}"
    );
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *response.status_mut() =
        hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::FORBIDDEN);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

async fn answer(
    request: Request<Incoming>,
    upstream: SocketAddr,
    connector: tokio_rustls::TlsConnector,
    faults: Arc<Mutex<Faults>>,
) -> Response<Body> {
    let path = request.uri().path().to_string();
    if lock(&faults).refused.iter().any(|p| path.starts_with(p)) {
        return status(403, "refused by the test's API front");
    }
    match forward(request, upstream, connector).await {
        Ok(response) => response.map(BodyExt::boxed),
        Err(e) => status(502, &format!("front: {e}")),
    }
}

async fn forward(
    request: Request<Incoming>,
    upstream: SocketAddr,
    connector: tokio_rustls::TlsConnector,
) -> anyhow::Result<Response<Incoming>> {
    let tcp = tokio::net::TcpStream::connect(upstream).await?;
    let name = ServerName::try_from("kubernetes.default.svc")?;
    let tls = connector.connect(name, tcp).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    Ok(sender.send_request(request).await?)
}
