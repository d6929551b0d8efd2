//! HTTP clients that behave like Kubernetes clients, and the classification of their
//! failures.
//!
//! [`HttpConn`] is one client's connection state: a single HTTP/2 connection (client-go)
//! or an HTTP/1.1 keep-alive pool. The runner holds one per simulated client process.

pub mod connect;
pub mod error;
pub mod h1;
pub mod h2;
pub mod tls;

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

pub use connect::{Endpoint, Target};
pub use error::{ClientError, ErrorKind};

use crate::scenario::Protocol;

/// Aborts a spawned task when dropped, so no connection driver outlives its client.
#[derive(Debug)]
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keeps an HTTP/1.1 connection checked out until the response body has been read; for
/// HTTP/2 it holds nothing. Drop it after reading the body.
pub struct Lease(#[allow(dead_code)] Option<h1::Checkout>);

/// The connection state of one simulated client.
pub enum HttpConn {
    /// One HTTP/2 connection.
    H2(h2::H2Client),
    /// An HTTP/1.1 pool.
    H1(h1::H1Pool),
}

impl HttpConn {
    /// A client for `endpoint`; `h1_pool` is the HTTP/1.1 pool size.
    pub fn new(endpoint: Arc<Endpoint>, h1_pool: usize) -> Self {
        match endpoint.protocol {
            Protocol::H2 => Self::H2(h2::H2Client::new(endpoint)),
            Protocol::H1 => Self::H1(h1::H1Pool::new(endpoint, h1_pool)),
        }
    }

    /// Opens the first connection before the load starts, so handshakes do not land in
    /// the latency of the first requests and connection order is deterministic (which
    /// matters for a round-robin L4 balancer).
    pub async fn preconnect(&self) -> Result<(), ClientError> {
        match self {
            Self::H2(c) => c.preconnect().await,
            Self::H1(p) => p.preconnect().await,
        }
    }

    /// Sends a request; returns the response (headers) and the lease to drop after the
    /// body has been read.
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Lease), ClientError> {
        match self {
            Self::H2(c) => Ok((c.send(req).await?, Lease(None))),
            Self::H1(p) => {
                let (resp, checkout) = p.send(req).await?;
                Ok((resp, Lease(Some(checkout))))
            }
        }
    }

    /// Closes all connections.
    pub async fn close(&self) {
        match self {
            Self::H2(c) => c.close().await,
            Self::H1(p) => p.close(),
        }
    }
}
