//! HTTP/1.1 keep-alive pool: up to `size` connections per client, each carrying one
//! request at a time. A connection goes back to the pool when the caller has read the
//! response body (the [`Checkout`] is dropped).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::connect::Endpoint;
use super::error::{ClientError, ErrorKind};
use super::AbortOnDrop;

struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    _driver: AbortOnDrop,
}

/// A bounded pool of HTTP/1.1 connections to one endpoint.
pub struct H1Pool {
    endpoint: Arc<Endpoint>,
    idle: Arc<Mutex<Vec<Conn>>>,
    permits: Arc<Semaphore>,
}

/// A connection lent to one request; returns to the pool on drop.
pub struct Checkout {
    conn: Option<Conn>,
    idle: Arc<Mutex<Vec<Conn>>>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            if !c.sender.is_closed() {
                if let Ok(mut idle) = self.idle.lock() {
                    idle.push(c);
                }
            }
        }
    }
}

impl H1Pool {
    /// A pool of at most `size` connections; none is opened yet.
    pub fn new(endpoint: Arc<Endpoint>, size: usize) -> Self {
        Self {
            endpoint,
            idle: Arc::new(Mutex::new(Vec::new())),
            permits: Arc::new(Semaphore::new(size.max(1))),
        }
    }

    async fn open(&self) -> Result<Conn, ClientError> {
        let io = self.endpoint.connect().await?;
        let (sender, conn) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| ClientError::classify(&e, ErrorKind::Protocol))?;
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "http/1.1 connection ended");
            }
        });
        Ok(Conn {
            sender,
            _driver: AbortOnDrop(driver),
        })
    }

    fn pop_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(c) = idle.pop() {
            if !c.sender.is_closed() {
                return Some(c);
            }
        }
        None
    }

    /// Opens one connection and parks it in the pool.
    pub async fn preconnect(&self) -> Result<(), ClientError> {
        let conn = self.open().await?;
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
        Ok(())
    }

    /// Sends one request on an idle (or new) connection; waits for a free slot when all
    /// `size` connections are busy.
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Checkout), ClientError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| ClientError::new(ErrorKind::Other, "pool closed"))?;
        let mut conn = match self.pop_idle() {
            Some(c) => c,
            // Boxed: opening is rare and its state machine is large; keep it out of
            // the per-request future.
            None => Box::pin(self.open()).await?,
        };
        if conn.sender.ready().await.is_err() {
            // The idle connection died (server closed it); one fresh attempt.
            conn = Box::pin(self.open()).await?;
            conn.sender
                .ready()
                .await
                .map_err(|e| ClientError::classify(&e, ErrorKind::Reset))?;
        }
        let resp = conn
            .sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::classify(&e, ErrorKind::Other))?;
        Ok((
            resp,
            Checkout {
                conn: Some(conn),
                idle: Arc::clone(&self.idle),
                _permit: permit,
            },
        ))
    }

    /// Drops all idle connections.
    pub fn close(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}
