//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/backends`.
//!
//! Kept on its own address (and usually its own interface) so probes and scrapes never
//! compete with API traffic and are never exposed through the TLS listener.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use pingora::server::ShutdownWatch;
use tokio::net::TcpListener;

use crate::state::State;

pub mod backends;

/// Readiness as reported by `/readyz`: ready once listeners are bound and a
/// configuration is active; not ready again as soon as shutdown starts, so load
/// balancers stop sending new connections while in-flight requests finish.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    /// Set readiness.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    /// Current readiness.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

fn text(status: u16, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// The metrics as a scrape sees them: live counters and backend health copied into
/// their gauges first.
pub fn scrape(state: &State) -> String {
    state.refresh_gauges();
    backends::export(&state.metrics, &backends::report(state));
    state.metrics.render()
}

fn route(state: &State, readiness: &Readiness, uri: &hyper::Uri) -> Response<Full<Bytes>> {
    match uri.path() {
        "/healthz" | "/livez" => text(200, "ok\n".into(), "text/plain"),
        "/readyz" if readiness.get() => text(200, "ok\n".into(), "text/plain"),
        "/readyz" => text(503, "not ready\n".into(), "text/plain"),
        "/metrics" => text(200, scrape(state), "text/plain; version=0.0.4"),
        "/backends" => {
            let reports = backends::report(state);
            let as_text = uri
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "format=text"));
            if as_text {
                text(200, backends::text(&reports), "text/plain; charset=utf-8")
            } else {
                match serde_json::to_string_pretty(&reports) {
                    Ok(json) => text(200, json + "\n", "application/json"),
                    Err(e) => text(500, format!("{e}\n"), "text/plain"),
                }
            }
        }
        _ => text(
            404,
            "not found; try /healthz, /readyz, /metrics or /backends\n".into(),
            "text/plain",
        ),
    }
}

/// Serve the admin endpoints until shutdown.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    readiness: Arc<Readiness>,
    mut shutdown: ShutdownWatch,
) {
    loop {
        let (tcp, peer): (_, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let state = state.clone();
        let readiness = readiness.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let response = route(&state, &readiness, req.uri());
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), service);
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "admin connection error");
            }
        });
    }
}
