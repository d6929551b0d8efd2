//! A client-go-like HTTP/2 client: one connection carrying every request of the client
//! as a stream. Reconnects lazily (one attempt at a time) when the connection is gone.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Mutex;

use super::connect::Endpoint;
use super::error::{ClientError, ErrorKind};
use super::AbortOnDrop;

struct Live {
    sender: http2::SendRequest<Full<Bytes>>,
    _driver: AbortOnDrop,
}

/// One HTTP/2 connection, opened on first use and re-opened after it fails.
pub struct H2Client {
    endpoint: Arc<Endpoint>,
    live: Mutex<Option<Live>>,
}

/// Per-stream receive window.
const STREAM_WINDOW: u32 = 4 << 20;
/// Per-connection receive window.
const CONNECTION_WINDOW: u32 = 32 << 20;

/// Opens a connection and spawns its driver task.
async fn open(
    endpoint: &Endpoint,
) -> Result<(http2::SendRequest<Full<Bytes>>, tokio::task::JoinHandle<()>), ClientError> {
    let io = endpoint.connect().await?;
    let mut builder = http2::Builder::new(TokioExecutor::new());
    // Large fixed windows (client-go uses 4 MiB per stream too): LIST bodies flow without
    // waiting for WINDOW_UPDATEs, and h2's guard against floods of small DATA frames
    // (budget = half the connection window) does not kill the connection with
    // ENHANCE_YOUR_CALM when an overloaded generator reads responses late.
    builder
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_reset_streams(1024);
    let (sender, conn) = builder
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| ClientError::classify(&e, ErrorKind::Protocol))?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "h2 connection ended");
        }
    });
    Ok((sender, driver))
}

impl H2Client {
    /// A client for `endpoint`; no connection is opened yet.
    pub fn new(endpoint: Arc<Endpoint>) -> Self {
        Self {
            endpoint,
            live: Mutex::new(None),
        }
    }

    /// Returns a handle on the live connection, connecting if there is none. Holding the
    /// lock while connecting makes concurrent requests wait for one attempt instead of
    /// opening many connections, as client-go does.
    async fn sender(&self) -> Result<http2::SendRequest<Full<Bytes>>, ClientError> {
        let mut live = self.live.lock().await;
        if let Some(l) = live.as_ref() {
            if !l.sender.is_closed() {
                return Ok(l.sender.clone());
            }
        }
        *live = None;
        // Boxed: connecting is rare, and keeping its large state machine out of the
        // per-request future keeps every request cheap to spawn.
        let (sender, driver) = Box::pin(open(&self.endpoint)).await?;
        *live = Some(Live {
            sender: sender.clone(),
            _driver: AbortOnDrop(driver),
        });
        Ok(sender)
    }

    /// Establishes the connection ahead of the first request.
    pub async fn preconnect(&self) -> Result<(), ClientError> {
        self.sender().await.map(|_| ())
    }

    /// Sends one request as a new stream; returns when the response headers arrive.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, ClientError> {
        let mut sender = self.sender().await?;
        sender
            .ready()
            .await
            .map_err(|e| ClientError::classify(&e, ErrorKind::Reset))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::classify(&e, ErrorKind::Other))
    }

    /// Closes the connection (aborts its driver task).
    pub async fn close(&self) {
        *self.live.lock().await = None;
    }
}
