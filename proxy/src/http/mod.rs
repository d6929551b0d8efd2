//! The HTTP stage: pingora's `ProxyHttp` hooks, kept thin.
//!
//! Each hook calls a pure decision (identity, classification, backend choice) and
//! records what happened. The order pingora runs them in, for one request or HTTP/2
//! stream:
//!
//! 1. `early_request_filter` — find the connection's context and route in the active
//!    configuration (loaded once for this request).
//! 2. `request_filter` — strip every identity header, reject unusable client
//!    certificates with a 400, classify the request.
//! 3. `upstream_peer` — choose a backend (least request / round robin) and the upstream
//!    pool: mTLS with the front-proxy certificate only for verified client certificates.
//! 4. `upstream_request_filter` — set identity headers and `X-Forwarded-For`.
//! 5. `fail_to_connect` / `error_while_proxy` — record failures, retry connect failures
//!    on another backend (nothing was sent, so any method is safe).
//! 6. `upstream_response_filter` — passive health from the response status.
//! 7. `fail_to_proxy` — the one place that writes apigate's own error responses.
//! 8. `logging` — metrics; the in-flight count ends when the context drops.

pub mod classify;
pub mod identity;
pub mod rejection;
mod upgrade;

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::ALPN;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::{H1UpgradePolicy, HttpPeer, HttpUpstreamRequestPolicy};
use pingora::{Error, ErrorSource, ErrorType};

use self::classify::Kind;
use self::identity::Identity;
use self::rejection::Rejection;
use crate::balance::health::now_nanos;
use crate::balance::{BackendState, InFlight};
use crate::listener::conn::{ClientAuth, ConnCtx};
use crate::state::{Active, RouteRuntime, State};
use apigate_control::snapshot::UpstreamTls;

/// Streams per upstream HTTP/2 connection before another connection is opened.
const MAX_UPSTREAM_H2_STREAMS: usize = 100;
/// Idle upstream connections are closed after this.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// HTTP/2 PING interval on upstream connections, so a dead replica is noticed even
/// while only quiet watches run over it.
const UPSTREAM_H2_PING: Duration = Duration::from_secs(30);
/// At most this many backends are tried for one request.
const MAX_ATTEMPTS: usize = 3;

/// apigate's HTTP proxy logic.
pub struct Apigate {
    state: Arc<State>,
}

impl Apigate {
    /// Proxy logic over shared state.
    pub fn new(state: Arc<State>) -> Self {
        Apigate { state }
    }
}

/// Per-request (per HTTP/2 stream) context.
pub struct RequestCtx {
    conn: Option<Arc<ConnCtx>>,
    active: Option<Arc<Active>>,
    route: Option<Arc<RouteRuntime>>,
    kind: Kind,
    identity: Option<Identity>,
    tried: Vec<SocketAddr>,
    in_flight: Option<InFlight>,
    /// The last backend tried, kept for metrics after its in-flight count ended.
    last_backend: Option<Arc<BackendState>>,
    rejection: Option<Rejection>,
    started: Instant,
    /// Status of an upgrade apigate served itself (see [`upgrade`]).
    upgrade_status: Option<u16>,
    /// Whether the current attempt got response headers from a replica.
    upstream_responded: bool,
}

impl RequestCtx {
    fn route_label(&self) -> &str {
        self.route.as_ref().map_or("none", |r| r.label.as_str())
    }

    fn backend_label(&self) -> &str {
        self.last_backend
            .as_ref()
            .map_or("none", |b| b.label.as_str())
    }

    fn active(&self) -> Option<&Arc<Active>> {
        self.active.as_ref()
    }
}

/// The connection context placed on the stream by the listener.
fn conn_ctx(session: &Session) -> Option<Arc<ConnCtx>> {
    session
        .digest()?
        .proxy_digest
        .as_ref()?
        .user_data
        .as_ref()?
        .downcast_ref::<Arc<ConnCtx>>()
        .cloned()
}

fn reject<T>(ctx: &mut RequestCtx, rejection: Rejection) -> pingora::Result<T> {
    let code = rejection.code();
    let message = rejection.message();
    ctx.rejection = Some(rejection);
    Error::e_explain(ErrorType::HTTPStatus(code), message)
}

/// Connection-pool key: route upstream material, identity mode and the age bucket.
/// A connection made in one `max_age` window is never reused in the next, which bounds
/// upstream connection age so rotated certificates take effect.
fn pool_key(upstream: &UpstreamTls, with_identity: bool, max_age: Duration) -> u64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let bucket = secs / max_age.as_secs().max(1);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    upstream.fingerprint.hash(&mut hasher);
    with_identity.hash(&mut hasher);
    bucket.hash(&mut hasher);
    hasher.finish()
}

#[async_trait]
impl ProxyHttp for Apigate {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            conn: None,
            active: None,
            route: None,
            kind: Kind::Ordinary,
            identity: None,
            tried: Vec::new(),
            in_flight: None,
            last_backend: None,
            rejection: None,
            started: Instant::now(),
            upgrade_status: None,
            upstream_responded: false,
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let Some(conn) = conn_ctx(session) else {
            return reject(ctx, Rejection::MissingConnectionContext);
        };
        conn.request_started();
        let active = self.state.load();
        ctx.route = active.route(&conn.route_id).cloned();
        ctx.active = Some(active);
        let route_id = conn.route_id.to_string();
        ctx.conn = Some(conn);
        if ctx.route.is_none() {
            return reject(ctx, Rejection::RouteGone(route_id));
        }
        Ok(())
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        identity::strip(session.req_header_mut());
        ctx.kind = classify::classify(session.req_header());
        let Some(conn) = ctx.conn.clone() else {
            return reject(ctx, Rejection::MissingConnectionContext);
        };
        if let Some(active) = ctx.active() {
            let timeouts = active.snapshot.gateway.timeouts;
            // pingora's HTTP/1.1 defaults (60 s keep-alive, 60 s body reads) would cut
            // an idle `kubectl exec` session; long-running requests get the long limit.
            let read_limit = if ctx.kind.is_long_running() {
                timeouts.long_running
            } else {
                timeouts.request
            };
            session.set_read_timeout(Some(read_limit));
            session.set_keepalive(Some(timeouts.idle.as_secs()));
        }
        match &conn.client {
            ClientAuth::Anonymous => {}
            ClientAuth::Verified(identity) => ctx.identity = Some(identity.clone()),
            ClientAuth::Invalid(e) => {
                return reject(ctx, Rejection::InvalidClientCertificate(e.to_string()))
            }
        }
        if ctx.kind == Kind::Upgrade && !session.is_http2() {
            return match upgrade::serve(&self.state, session, ctx).await {
                Ok(status) => {
                    ctx.upgrade_status = Some(status);
                    Ok(true)
                }
                Err(rejection) => reject(ctx, rejection),
            };
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let (Some(route), Some(active)) = (ctx.route.clone(), ctx.active().cloned()) else {
            return reject(ctx, Rejection::MissingConnectionContext);
        };
        let (Some(terminate), Some(peer_tls)) = (&route.route.terminate, &route.upstream) else {
            // The route changed to passthrough under this terminated connection.
            return reject(ctx, Rejection::RouteGone(route.label.clone()));
        };
        // A retry releases the previous attempt's in-flight count first.
        ctx.in_flight = None;
        let Some((backend, choice)) = route.backends.pick(now_nanos(), &ctx.tried) else {
            let label = route.label.clone();
            return if ctx.tried.is_empty() {
                reject(ctx, Rejection::NoBackend(label))
            } else {
                reject(
                    ctx,
                    Rejection::UpstreamUnavailable(format!(
                        "{} backend(s) of {label} failed to connect",
                        ctx.tried.len()
                    )),
                )
            };
        };
        if choice.panic {
            self.state
                .metrics
                .panic_mode
                .with_label_values(&[route.label.as_str()])
                .inc();
        }
        ctx.tried.push(backend.addr);
        ctx.last_backend = Some(backend.clone());
        ctx.in_flight = Some(InFlight::start(backend.clone(), ctx.kind.is_long_running()));

        let timeouts = active.snapshot.gateway.timeouts;
        let upstream = &terminate.upstream;
        let mut peer = HttpPeer::new(backend.addr, true, upstream.server_name.clone());
        let options = &mut peer.options;
        options.verify_cert = true;
        options.verify_hostname = true;
        options.ca = Some(peer_tls.ca.clone());
        options.connection_timeout = Some(timeouts.connect);
        options.total_connection_timeout = Some(timeouts.connect);
        let silence = if ctx.kind.is_long_running() {
            timeouts.long_running
        } else {
            timeouts.request
        };
        options.read_timeout = Some(silence);
        options.write_timeout = Some(silence);
        options.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
        options.h2_ping_interval = Some(UPSTREAM_H2_PING);
        options.max_h2_streams = MAX_UPSTREAM_H2_STREAMS;
        if ctx.kind == Kind::Upgrade {
            // kubectl exec/attach/port-forward use SPDY/3.1 as well as WebSocket;
            // pingora's default policy would forward only WebSocket upgrades.
            options.alpn = ALPN::H1;
            options.http_upstream_request_policy = HttpUpstreamRequestPolicy {
                h1_upgrade: H1UpgradePolicy::Preserve,
                ..HttpUpstreamRequestPolicy::default()
            };
        } else {
            options.alpn = ALPN::H2H1;
        }
        // The front-proxy identity is only ever attached for verified client
        // certificates; token and anonymous requests use a pool without it.
        let with_identity = ctx.identity.is_some();
        if with_identity {
            peer.client_cert_key = peer_tls.front_proxy.clone();
        }
        peer.group_key = pool_key(
            upstream,
            with_identity,
            timeouts.upstream_max_connection_age,
        );
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        // `request_filter` stripped the downstream request this copy was made from.
        debug_assert!(!identity::has_identity_headers(upstream_request));
        if let Some(identity) = &ctx.identity {
            identity.apply(upstream_request)?;
        }
        let client = ctx.conn.as_ref().map(|c| c.peer.ip()).or_else(|| {
            session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip())
        });
        if let Some(ip) = client {
            upstream_request.insert_header("X-Forwarded-For", ip.to_string())?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if upstream_response.status.is_informational() && upstream_response.status != 101 {
            return Ok(());
        }
        ctx.upstream_responded = true;
        if let Some(flight) = &ctx.in_flight {
            let backend = flight.backend().clone();
            if matches!(upstream_response.status.as_u16(), 502..=504) {
                self.record_failure(ctx, &backend);
            } else {
                backend.health.record_success();
            }
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let route_label = ctx.route_label().to_string();
        if let (Some(flight), Some(active)) = (ctx.in_flight.take(), ctx.active()) {
            let policy = active.snapshot.gateway.ejection;
            self.state
                .backend_failed(&route_label, flight.backend(), &policy, true);
        }
        let backends = ctx.route.as_ref().map_or(0, |r| r.backends.states.len());
        let retry = ctx.tried.len() < backends.min(MAX_ATTEMPTS);
        tracing::warn!(
            route = %route_label,
            backend = %peer,
            error = %e,
            retry,
            "upstream connect failed"
        );
        if retry {
            self.state
                .metrics
                .retries
                .with_label_values(&[route_label.as_str()])
                .inc();
        }
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let upstream_failed = e.esource() == &ErrorSource::Upstream;
        if upstream_failed {
            if let Some(flight) = &ctx.in_flight {
                let backend = flight.backend().clone();
                self.record_failure(ctx, &backend);
            }
        }
        let mut e = e.more_context(format!("backend {peer}"));
        let idempotent = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        let backends = ctx.route.as_ref().map_or(0, |r| r.backends.states.len());
        let attempts_left = ctx.tried.len() < backends.min(MAX_ATTEMPTS);
        if !idempotent {
            e.set_retry(false);
        } else if upstream_failed && !ctx.upstream_responded && attempts_left {
            // The replica failed before answering (e.g. it went away and its
            // connection broke): an idempotent request is safe to send elsewhere.
            e.set_retry(true);
            self.state
                .metrics
                .retries
                .with_label_values(&[ctx.route_label()])
                .inc();
        } else {
            e.retry.decide_reuse(client_reused);
        }
        ctx.upstream_responded = false;
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let rejection = ctx.rejection.take().or_else(|| rejection_for(e, ctx));
        let Some(rejection) = rejection else {
            // The client went away or broke the protocol: nobody to answer.
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        self.state
            .metrics
            .rejections
            .with_label_values(&[rejection.label()])
            .inc();
        if let Err(write_error) = rejection.respond(session).await {
            tracing::debug!(error = %write_error, "could not write error response");
        }
        FailToProxy {
            error_code: rejection.code(),
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let code = session.response_written().map_or(0, |r| r.status.as_u16());
        let route = ctx.route_label().to_string();
        self.state
            .metrics
            .requests
            .with_label_values(&[
                route.as_str(),
                ctx.backend_label(),
                code_label(code).as_str(),
            ])
            .inc();
        if !ctx.kind.is_long_running() {
            self.state
                .metrics
                .request_duration
                .with_label_values(&[route.as_str()])
                .observe(ctx.started.elapsed().as_secs_f64());
        }
        if let Some(e) = e {
            tracing::debug!(route = %route, backend = ctx.backend_label(), code, error = %e, "request failed");
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, error: &Error) -> bool {
        // apigate's own rejections are counted and logged by apigate; a client that goes
        // away (a cancelled watch, a killed kubectl) is normal, not an error, and is
        // logged at debug by `logging`.
        ctx.rejection.is_some() || error.esource() == &ErrorSource::Downstream
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        _error: &Error,
        _context: pingora::proxy::ProxyWarnLogContext,
    ) -> bool {
        // Retries are logged (with route and backend) and counted in `fail_to_connect`.
        true
    }
}

impl Apigate {
    fn record_failure(&self, ctx: &RequestCtx, backend: &Arc<BackendState>) {
        let Some(active) = ctx.active() else { return };
        let policy = active.snapshot.gateway.ejection;
        self.state
            .backend_failed(ctx.route_label(), backend, &policy, false);
    }
}

/// Map a pingora error to the response apigate gives, or `None` when the client is gone.
fn rejection_for(e: &Error, ctx: &RequestCtx) -> Option<Rejection> {
    let route = ctx.route_label().to_string();
    let context = e
        .context
        .as_ref()
        .map(|c| c.as_str().to_string())
        .unwrap_or_else(|| e.etype().as_str().to_string());
    match (e.esource(), e.etype()) {
        (_, ErrorType::HTTPStatus(code)) if *code < 500 => Some(Rejection::BadRequest(context)),
        (_, ErrorType::ConnectTimedout) => Some(Rejection::UpstreamTimeout(format!(
            "{route}: connect timed out"
        ))),
        (ErrorSource::Upstream, ErrorType::ReadTimedout | ErrorType::WriteTimedout) => {
            Some(Rejection::UpstreamTimeout(format!("{route}: {context}")))
        }
        (ErrorSource::Upstream, _) => Some(Rejection::UpstreamUnavailable(format!(
            "{route}: {}",
            e.etype().as_str()
        ))),
        (
            ErrorSource::Downstream,
            ErrorType::ReadError
            | ErrorType::WriteError
            | ErrorType::ConnectionClosed
            | ErrorType::ReadTimedout
            | ErrorType::WriteTimedout,
        ) => None,
        (ErrorSource::Downstream, _) => Some(Rejection::BadRequest(context)),
        _ => Some(Rejection::Internal(context)),
    }
}

/// Status code as a metric label. Valid codes are a bounded set (100–599); anything
/// else (no response written) is `0`.
fn code_label(code: u16) -> String {
    if (100..600).contains(&code) {
        code.to_string()
    } else {
        "0".to_string()
    }
}
