//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/backends`, `/rollout`.
//!
//! Kept on its own address (and usually its own interface) so probes and scrapes never
//! compete with API traffic and are never exposed through the TLS listener. Reading is
//! open to whoever reaches the address; actions that change state (`POST
//! /rollout/resume|abort|promote`) are taken only from loopback clients, or from
//! clients presenting the bearer token of `spec.admin.tokenFile`.

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

use apigate_control::snapshot::AdminToken;

use crate::rollout::{Action, Rollout};
use crate::state::State;

pub mod backends;
pub mod client;

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

/// What the admin endpoints serve from.
#[derive(Clone)]
pub struct Admin {
    /// Shared proxy state.
    pub state: Arc<State>,
    /// `/readyz`.
    pub readiness: Arc<Readiness>,
    /// The rollout controller (file or Kubernetes source; none for a fixed configuration).
    pub rollout: Option<Arc<Rollout>>,
}

fn json<T: serde::Serialize>(status: u16, value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_string_pretty(value) {
        Ok(json) => text(status, json + "\n", "application/json"),
        Err(e) => text(500, format!("{e}\n"), "text/plain"),
    }
}

/// Whether the client may change state: a loopback peer, or the configured token.
fn authorized(token: Option<&AdminToken>, peer: SocketAddr, headers: &hyper::HeaderMap) -> bool {
    if peer.ip().is_loopback() {
        return true;
    }
    let Some(token) = token else {
        return false;
    };
    headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|presented| token.matches(presented.trim()))
}

/// `POST /rollout/<action>`.
fn rollout_action(
    admin: &Admin,
    peer: SocketAddr,
    method: &hyper::Method,
    headers: &hyper::HeaderMap,
    name: &str,
) -> Response<Full<Bytes>> {
    let Some(action) = Action::parse(name) else {
        return text(
            404,
            "unknown action; try resume, abort or promote\n".into(),
            "text/plain",
        );
    };
    if method != hyper::Method::POST {
        return text(405, "use POST\n".into(), "text/plain");
    }
    let token = admin.state.load().snapshot.gateway.admin_token.clone();
    if !authorized(token.as_ref(), peer, headers) {
        tracing::warn!(%peer, action = name, "admin action refused: not loopback and no valid token");
        return text(
            403,
            "forbidden: rollout actions are taken from loopback clients or with the token of spec.admin.tokenFile\n".into(),
            "text/plain",
        );
    }
    let Some(rollout) = &admin.rollout else {
        return text(
            409,
            "no rollout controller: this server's configuration is fixed\n".into(),
            "text/plain",
        );
    };
    tracing::info!(%peer, action = name, "admin rollout action");
    match rollout.act(action) {
        Ok(status) => json(200, &status),
        Err(e) => text(409, format!("{e}\n"), "text/plain"),
    }
}

fn route(
    admin: &Admin,
    peer: SocketAddr,
    method: &hyper::Method,
    headers: &hyper::HeaderMap,
    uri: &hyper::Uri,
) -> Response<Full<Bytes>> {
    let (state, readiness) = (&*admin.state, &*admin.readiness);
    if let Some(name) = uri.path().strip_prefix("/rollout/") {
        return rollout_action(admin, peer, method, headers, name);
    }
    match uri.path() {
        "/rollout" => match &admin.rollout {
            Some(rollout) => json(200, &rollout.status()),
            None => text(
                404,
                "no rollout controller: this server's configuration is fixed\n".into(),
                "text/plain",
            ),
        },
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
            "not found; try /healthz, /readyz, /metrics, /backends or /rollout\n".into(),
            "text/plain",
        ),
    }
}

/// Serve the admin endpoints until shutdown.
pub async fn serve(listener: TcpListener, admin: Admin, mut shutdown: ShutdownWatch) {
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
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let admin = admin.clone();
                // Actions compile and install: blocking work, off the admin's task.
                let response = tokio::task::spawn_blocking(move || {
                    route(&admin, peer, req.method(), req.headers(), req.uri())
                });
                async move {
                    Ok::<_, Infallible>(
                        response
                            .await
                            .unwrap_or_else(|e| text(500, format!("{e}\n"), "text/plain")),
                    )
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: Option<&str>) -> hyper::HeaderMap {
        let mut headers = hyper::HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(
                hyper::header::AUTHORIZATION,
                hyper::header::HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[tokio::test]
    async fn with_a_shared_rollout_record_actions_answer_409_with_the_kubectl_command() {
        let base = apigate_control::inputs::Inputs {
            objects: apigate_control::model::parse_documents(
                "apiVersion: apigate.dev/v1alpha1\nkind: GatewayConfig\nmetadata: {name: gw}\nspec:\n  listeners: [{name: https, address: '127.0.0.1:0'}]\n  rollout: {enabled: true}\n",
                "test.yaml",
            )
            .unwrap(),
            scope: apigate_control::inputs::Scope::Cluster,
            files: Default::default(),
        };
        let state = State::new(
            apigate_control::compile(&base).unwrap(),
            crate::metrics::Metrics::new(),
        );
        let record = crate::rollout::shared::RecordName {
            namespace: "apigate-system".into(),
            name: "gw".into(),
        };
        let admin = Admin {
            rollout: Some(Rollout::for_kubernetes(state.clone(), base, Some(record))),
            state,
            readiness: Arc::new(Readiness::default()),
        };
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let response = rollout_action(&admin, local, &hyper::Method::POST, &headers(None), "abort");
        assert_eq!(response.status(), 409);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("kubectl -n apigate-system patch apigaterollout gw"),
            "{body}"
        );
    }

    #[test]
    fn state_changing_actions_need_loopback_or_the_token() {
        let token = AdminToken("s3cret-token-0123456789".into());
        let remote: SocketAddr = "10.1.2.3:40000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let local6: SocketAddr = "[::1]:40000".parse().unwrap();
        assert!(authorized(None, local, &headers(None)));
        assert!(authorized(None, local6, &headers(None)));
        assert!(!authorized(None, remote, &headers(None)));
        assert!(!authorized(
            None,
            remote,
            &headers(Some("Bearer s3cret-token-0123456789"))
        ));
        assert!(!authorized(Some(&token), remote, &headers(None)));
        assert!(!authorized(
            Some(&token),
            remote,
            &headers(Some("Bearer wrong"))
        ));
        assert!(!authorized(
            Some(&token),
            remote,
            &headers(Some("s3cret-token-0123456789"))
        ));
        assert!(authorized(
            Some(&token),
            remote,
            &headers(Some("Bearer s3cret-token-0123456789"))
        ));
    }
}
