//! The HTTP stage: pingora's `ProxyHttp` hooks, kept thin.
//!
//! Each hook calls a pure decision (headers, classification) or the forwarding core
//! ([`crate::upstream`]) and records what happened. The order pingora runs them in, for
//! one request or HTTP/2 stream:
//!
//! 1. `early_request_filter` — read what the request asks (verb, resource: one parse
//!    for its class and its metric labels), find the connection's context and its
//!    route in the active configuration (loaded once for this request); bound the
//!    request head.
//! 2. `request_filter` — strip the headers apigate owns, give the request an
//!    `Audit-ID` when the access log is on, refuse what apigate does not proxy
//!    (CONNECT, misdirected hosts, unusable client certificates), then flow control
//!    admits, queues or refuses it ([`crate::flow`]); upgrades are forwarded here by
//!    `upgrade`.
//! 3. `upstream_peer` — the forwarding core picks the replica and the pool: mTLS with the
//!    front-proxy certificate only for verified client certificates.
//! 4. `upstream_request_filter` — set identity headers and `X-Forwarded-For`.
//! 5. `fail_to_connect` / `error_while_proxy` — translate the engine's error into a
//!    [`Failure`]; the core records it and says whether to retry.
//! 6. `upstream_response_filter` — a response head arrived: the attempt succeeded.
//! 7. `response_filter` — while draining, HTTP/1.1 responses close their connection.
//! 8. `fail_to_proxy` — the one place that writes apigate's own error responses.
//! 9. `logging` — metrics (per route and per verb), the access log line; the in-flight
//!    count and the flow-control permit end with the request.

pub mod classify;
pub mod headers;
pub mod request_info;
mod upgrade;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::ALPN;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::{H1UpgradePolicy, HttpPeer, HttpUpstreamRequestPolicy};
use pingora::{Error, ErrorSource, ErrorType};

use self::classify::Kind;
use crate::access_log;
use crate::balance::Load;
use crate::conn::{ClientAuth, ConnCtx};
use crate::flow::{self, limiter::Permit};
use crate::identity::Identity;
use crate::metrics::api::ApiLabels;
use crate::rejection::Rejection;
use crate::state::{Active, RouteRuntime, State};
use crate::upstream::pool::Identity as PoolIdentity;
use crate::upstream::{Attempts, Failure, NoReplica, Replay, ShutdownSignal, Verdict};

/// Streams per upstream HTTP/2 connection before another connection is opened.
const MAX_UPSTREAM_H2_STREAMS: usize = 100;
/// The largest HTTP/2 flow-control window (RFC 9113 §6.9.1).
const MAX_WINDOW: u32 = (1 << 31) - 1;
/// Idle upstream connections are closed after this.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// apigate's HTTP proxy logic.
pub struct Apigate {
    state: Arc<State>,
}

impl Apigate {
    /// Proxy logic over shared state.
    pub fn new(state: Arc<State>) -> Self {
        Apigate { state }
    }

    /// Flow control: admit the request (keeping its permit in `ctx` until it ends),
    /// after a fair wait for a slot, or refuse it with a 429.
    async fn admit(&self, session: &Session, ctx: &mut RequestCtx) -> Result<(), Rejection> {
        let Some(routed) = &ctx.routed else {
            return Ok(());
        };
        let (Some(settings), Some(flow)) = (&routed.route.route.flow_control, &routed.route.flow)
        else {
            return Ok(());
        };
        let (settings, flow) = (settings.clone(), flow.clone());
        let (conn, label) = (routed.conn.clone(), routed.route.label.clone());
        let long_running = ctx.kind.is_long_running();
        let upgrade = ctx.kind == Kind::Upgrade;
        let request = session.req_header();
        let admitted = flow::admit(&flow, &settings, &conn, request, long_running, upgrade).await;
        let metrics = &self.state.metrics;
        match admitted {
            Ok(permit) => {
                if let Some(waited) = permit.as_ref().and_then(|p| p.waited) {
                    metrics
                        .flow_wait
                        .with_label_values(&[&*label])
                        .observe(waited.as_secs_f64());
                }
                ctx.permit = permit;
                Ok(())
            }
            Err(throttled) => {
                let policy = throttled.policy.as_deref().unwrap_or("route");
                metrics
                    .flow_rejected
                    .with_label_values(&[&*label, policy, throttled.reason.label()])
                    .inc();
                Err(Rejection::TooManyRequests(throttled))
            }
        }
    }

    /// Hand the request's access log line to the writer, when the log is on and the
    /// request is sampled. A request whose connection context is missing (an internal
    /// error, counted in the rejections) has nobody to name and is not logged.
    fn log_access(&self, session: &Session, ctx: &RequestCtx, code: u16, elapsed: Duration) {
        let Some(InRequest(conn)) = &ctx.in_request else {
            return;
        };
        let settings = match &ctx.routed {
            Some(routed) => routed.active.snapshot.gateway.access_log.clone(),
            None => self.state.load().snapshot.gateway.access_log.clone(),
        };
        let Some(settings) = settings else {
            return;
        };
        if !access_log::wanted(&settings, code, ctx.answered_reason.is_some()) {
            return;
        }
        let request = request_of(session, ctx);
        let route = match &ctx.routed {
            Some(routed) => routed.route.label.clone(),
            None => Arc::from(conn.route_id.to_string()),
        };
        let (bytes_in, bytes_out) = match ctx.upgraded {
            Some(upgraded) => (upgraded.moved.up, upgraded.moved.down),
            None => {
                let body = session.as_ref();
                let bytes = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
                (bytes(body.body_bytes_read()), bytes(body.body_bytes_sent()))
            }
        };
        let authorization = match conn.client {
            ClientAuth::Verified(_) => None,
            ClientAuth::Anonymous | ClientAuth::Invalid(_) => {
                request.headers.get(http::header::AUTHORIZATION).cloned()
            }
        };
        self.state.access_log.submit(access_log::Entry {
            settings,
            time: SystemTime::now()
                .checked_sub(elapsed)
                .unwrap_or(SystemTime::UNIX_EPOCH),
            route,
            listener: conn.listener.clone(),
            client: conn.peer,
            peer: conn.tcp_peer,
            auth: conn.client.clone(),
            authorization,
            protocol: if session.is_http2() {
                "HTTP/2"
            } else {
                "HTTP/1.1"
            },
            request: Some((request.method.clone(), request.uri.clone())),
            upgrade: ctx.kind == Kind::Upgrade,
            status: code,
            answered: ctx.answered_reason,
            duration: elapsed,
            bytes_in,
            bytes_out,
            backend: ctx.attempts.as_ref().and_then(|a| a.backend()).cloned(),
            retries: ctx
                .attempts
                .as_ref()
                .map_or(0, |a| a.tries().saturating_sub(1)),
            audit_id: request.headers.get(access_log::AUDIT_ID).cloned(),
        });
    }
}

/// A request on its connection, with its route in the configuration it loaded.
struct Routed {
    conn: Arc<ConnCtx>,
    active: Arc<Active>,
    route: Arc<RouteRuntime>,
}

impl Routed {
    fn identity(&self) -> Option<&Identity> {
        match &self.conn.client {
            ClientAuth::Verified(identity) => Some(identity),
            ClientAuth::Anonymous | ClientAuth::Invalid(_) => None,
        }
    }
}

/// Marks a request as in apigate's hooks from its first hook until the engine is done
/// with it (the context is dropped), which the transport relies on.
struct InRequest(Arc<ConnCtx>);

impl Drop for InRequest {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// Per-request (per HTTP/2 stream) context.
pub struct RequestCtx {
    in_request: Option<InRequest>,
    routed: Option<Routed>,
    kind: Kind,
    attempts: Option<Attempts>,
    rejection: Option<Rejection>,
    /// Why apigate answered the request itself (the reason it logged and counted):
    /// the engine's own error line would say it again, unstructured; the access log
    /// names it.
    answered_reason: Option<&'static str>,
    started: Instant,
    /// How an upgrade apigate served itself ended (see [`upgrade`]).
    upgraded: Option<upgrade::Upgraded>,
    /// The head of an upgrade apigate serves itself: the engine's session no longer
    /// holds it once the client stream is taken out of it.
    upgrade_head: Option<Box<RequestHeader>>,
    /// The request's per-verb metric labels, once its head was read.
    api: Option<ApiLabels>,
    /// What flow control admitted the request with, held until it ends.
    permit: Option<Permit>,
}

impl RequestCtx {
    fn route_label(&self) -> &str {
        self.routed.as_ref().map_or("none", |r| &*r.route.label)
    }

    fn backend_label(&self) -> &str {
        self.attempts
            .as_ref()
            .and_then(|a| a.backend())
            .map_or("none", |b| b.label.as_str())
    }
}

/// The request's head, wherever it is kept (see [`RequestCtx::upgrade_head`]).
fn request_of<'a>(session: &'a Session, ctx: &'a RequestCtx) -> &'a RequestHeader {
    match &ctx.upgrade_head {
        Some(head) => head,
        None => session.req_header(),
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

/// Size of a request head as received: request line (or HTTP/2 pseudo-headers) and
/// header fields, each line with its separators.
fn head_size(request: &RequestHeader) -> usize {
    let line = request.method.as_str().len()
        + request.uri.path_and_query().map_or(1, |p| p.as_str().len())
        + request.uri.authority().map_or(0, |a| a.as_str().len())
        + 12;
    request.headers.iter().fold(line, |size, (name, value)| {
        size + name.as_str().len() + value.len() + 4
    })
}

/// The host a request names, lowercased and without port: `:authority`, else `Host`.
fn requested_host(request: &RequestHeader) -> Option<String> {
    let authority = match request.uri.authority() {
        Some(authority) => authority.host().to_string(),
        None => {
            let host = request.headers.get(http::header::HOST)?.to_str().ok()?;
            let host = host.trim();
            // [v6]:port, name:port, or a bare name.
            if let Some(v6) = host.strip_prefix('[') {
                v6.split(']').next().unwrap_or(v6).to_string()
            } else {
                host.rsplit_once(':').map_or(host, |(h, _)| h).to_string()
            }
        }
    };
    Some(authority.trim_end_matches('.').to_ascii_lowercase())
}

/// Classify an error of the pooled path into the forwarding core's terms, or `None`
/// when it is the client's (a cancelled stream, a broken downstream).
fn failure_of(e: &Error, responded: bool) -> Option<Failure> {
    if e.esource() == &ErrorSource::Downstream {
        return None;
    }
    if let Some(h2) = e.root_cause().downcast_ref::<h2::Error>() {
        if h2.is_remote() && (h2.is_go_away() || h2.reason() == Some(h2::Reason::REFUSED_STREAM)) {
            return Some(Failure::NotProcessed);
        }
        if h2.is_remote() && h2.is_reset() {
            return Some(Failure::Refused);
        }
    }
    Some(match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::TLSHandshakeTimedout => Failure::ConnectTimeout,
        ErrorType::TLSHandshakeFailure
        | ErrorType::InvalidCert
        | ErrorType::HandshakeError
        | ErrorType::TLSWantX509Lookup => Failure::Tls,
        ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::BindError
        | ErrorType::SocketError => Failure::Connect,
        ErrorType::ReadTimedout | ErrorType::WriteTimedout if responded => Failure::BodyTimeout,
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => Failure::ResponseHeaderTimeout,
        ErrorType::InvalidHTTPHeader | ErrorType::HTTPStatus(_) | ErrorType::H1Error => {
            Failure::Refused
        }
        _ => Failure::Reset {
            before_response: !responded,
        },
    })
}

#[async_trait]
impl ProxyHttp for Apigate {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            in_request: None,
            routed: None,
            kind: Kind::Ordinary,
            attempts: None,
            rejection: None,
            answered_reason: None,
            started: Instant::now(),
            upgraded: None,
            upgrade_head: None,
            api: None,
            permit: None,
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let request = session.req_header();
        let path = request_info::decoded_path(request.uri.path());
        let (kind, info) = classify::classify(request, &path);
        ctx.kind = kind;
        let content_type = (request.method == http::Method::PATCH)
            .then(|| request.headers.get(http::header::CONTENT_TYPE))
            .flatten()
            .map(http::HeaderValue::as_bytes);
        ctx.api = Some(ApiLabels::of(&info, content_type));
        let Some(conn) = conn_ctx(session) else {
            return reject(ctx, Rejection::MissingConnectionContext);
        };
        conn.request_started();
        ctx.in_request = Some(InRequest(conn.clone()));
        let active = self.state.load();
        let route = match active.route(&conn.route_id) {
            // The route may have turned to passthrough under this terminated connection.
            Some(route) if route.peer_tls.is_some() => route.clone(),
            _ => return reject(ctx, Rejection::RouteGone(conn.route_id.to_string())),
        };
        let limit = route.upstream.settings.max_request_header_bytes;
        ctx.routed = Some(Routed {
            conn,
            active,
            route,
        });
        if head_size(session.req_header()) > limit {
            return reject(ctx, Rejection::HeaderTooLarge(limit));
        }
        Ok(())
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        headers::sanitize(session.req_header_mut());
        let Some(routed) = &ctx.routed else {
            return reject(ctx, Rejection::MissingConnectionContext);
        };
        // With the access log on, every request carries an audit ID upstream, so the
        // API server's audit log and apigate's line join on it.
        let logged = routed.active.snapshot.gateway.access_log.is_some();
        if logged
            && !session
                .req_header()
                .headers
                .contains_key(access_log::AUDIT_ID)
        {
            session
                .req_header_mut()
                .insert_header("Audit-ID", access_log::new_audit_id())?;
        }
        let settings = routed.route.upstream.settings;
        // pingora's HTTP/1.1 defaults (60 s keep-alive, 60 s body reads) would cut an
        // idle `kubectl exec` session; long-running requests get the long limit.
        let read_limit = if ctx.kind.is_long_running() {
            settings.timeouts.long_running
        } else {
            settings.timeouts.request
        };
        session.set_read_timeout(Some(read_limit));
        if self.state.is_draining() {
            session.set_keepalive(None);
        } else {
            // At least one second: pingora reads a keep-alive of 0 as "forever".
            session.set_keepalive(Some(settings.timeouts.idle.as_secs().max(1)));
        }
        if session.req_header().method == http::Method::CONNECT {
            return reject(ctx, Rejection::MethodNotAllowed("CONNECT".into()));
        }
        if let ClientAuth::Invalid(e) = &routed.conn.client {
            let message = e.to_string();
            return reject(ctx, Rejection::InvalidClientCertificate(message));
        }
        if let Some(host) = requested_host(session.req_header()) {
            let other = routed
                .active
                .snapshot
                .route_for_sni(&host)
                .is_some_and(|r| r.id != routed.conn.route_id);
            if other {
                return reject(ctx, Rejection::Misdirected(host));
            }
        }
        if let Err(throttled) = self.admit(session, ctx).await {
            return reject(ctx, throttled);
        }
        let Some(routed) = &ctx.routed else {
            return reject(ctx, Rejection::MissingConnectionContext);
        };
        let load = if ctx.kind.is_long_running() {
            Load::LongRunning
        } else {
            Load::Ordinary
        };
        let pool = match routed.identity() {
            Some(_) => PoolIdentity::FrontProxy,
            None => PoolIdentity::Anonymous,
        };
        ctx.attempts = Some(Attempts::new(routed.route.upstream.clone(), load, pool));
        if ctx.kind == Kind::Upgrade && !session.is_http2() {
            ctx.upgrade_head = Some(Box::new(session.req_header().clone()));
            return match upgrade::serve(&self.state, session, ctx).await {
                Ok(upgraded) => {
                    ctx.answered_reason = upgraded.answered;
                    ctx.upgraded = Some(upgraded);
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
        let (Some(routed), Some(attempts)) = (&ctx.routed, ctx.attempts.as_mut()) else {
            return reject(ctx, Rejection::MissingConnectionContext);
        };
        let route = routed.route.clone();
        let with_identity = routed.identity().is_some();
        let (Some(terminate), Some(peer_tls)) = (route.route.terminate(), &route.peer_tls) else {
            return reject(ctx, Rejection::RouteGone(route.label.to_string()));
        };
        let attempt = match attempts.start_next() {
            Ok(attempt) => attempt,
            Err(NoReplica::NoBackends) => {
                return reject(ctx, Rejection::NoBackend(route.label.to_string()))
            }
            Err(NoReplica::Exhausted { tried }) => {
                return reject(
                    ctx,
                    Rejection::UpstreamUnavailable(format!(
                        "{tried} replica(s) of {} failed",
                        route.label
                    )),
                )
            }
        };
        let timeouts = route.upstream.settings.timeouts;
        let upstream = &terminate.upstream;
        let mut peer = HttpPeer::new(attempt.backend.addr, true, upstream.server_name.clone());
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
        // So a dead replica is noticed even while only quiet watches run over it. A
        // change applies to connections opened after it (pooled ones keep theirs).
        let http2 = &routed.active.snapshot.gateway.http2;
        options.h2_ping_interval = Some(http2.upstream_ping_interval);
        // What a client that stops reading makes apigate hold per stream (pingora's
        // default, 8 MiB, is also the connection's window: one stream left unread could
        // take all of it). The connection's window has a share for each stream it may
        // carry.
        options.h2_stream_window_size = Some(http2.upstream_stream_window);
        options.h2_connection_window_size = Some(
            http2
                .upstream_stream_window
                .saturating_mul(u32::try_from(MAX_UPSTREAM_H2_STREAMS).unwrap_or(u32::MAX))
                .min(MAX_WINDOW),
        );
        options.max_h2_streams = MAX_UPSTREAM_H2_STREAMS;
        if ctx.kind == Kind::Upgrade {
            // Upgrades on HTTP/2 streams (extended CONNECT is not used by kubectl) are
            // forwarded as HTTP/1.1 upgrades; keep every upgrade protocol.
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
        if with_identity {
            peer.client_cert_key = peer_tls.front_proxy.clone();
        }
        peer.group_key = attempt.pool_key;
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        // `request_filter` sanitized the downstream request this copy was made from.
        debug_assert!(!headers::has_owned_headers(upstream_request));
        let Some(routed) = &ctx.routed else {
            return reject(ctx, Rejection::MissingConnectionContext);
        };
        headers::set_upstream(upstream_request, routed.identity(), routed.conn.peer.ip())
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
        if let Some(attempts) = ctx.attempts.as_mut() {
            let headers = upstream_response
                .headers
                .iter()
                .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()));
            attempts.responded(ShutdownSignal::in_head(
                upstream_response.status.as_u16(),
                headers,
            ));
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        _ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if self.state.is_draining() {
            // Shutdown: this response closes its HTTP/1.1 connection.
            session.set_keepalive(None);
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let failure = failure_of(&e, false).unwrap_or(Failure::Connect);
        // Nothing was sent: any request may move to another replica.
        let retry = ctx
            .attempts
            .as_mut()
            .is_some_and(|a| a.failed(failure, Replay::NOTHING_SENT) == Verdict::Retry);
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("backend {peer}"));
        let responded = ctx.attempts.as_ref().is_some_and(|a| a.has_responded());
        let replay = Replay {
            idempotent: session.req_header().method.is_idempotent(),
            body_replayable: !session.as_ref().retry_buffer_truncated(),
        };
        let retry = match (failure_of(&e, responded), ctx.attempts.as_mut()) {
            (Some(failure), Some(attempts)) => attempts.failed(failure, replay) == Verdict::Retry,
            _ => false,
        };
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let Some(rejection) = ctx.rejection.take().or_else(|| rejection_for(e, ctx)) else {
            // The client went away or broke the protocol: nobody to answer.
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        self.state
            .metrics
            .rejections
            .with_label_values(&[ctx.route_label(), rejection.label()])
            .inc();
        ctx.answered_reason = Some(rejection.label());
        if rejection.code() >= 500 {
            tracing::warn!(route = ctx.route_label(), backend = ctx.backend_label(), code = rejection.code(), reason = rejection.label(), error = %e, "request answered by apigate");
        } else {
            tracing::debug!(route = ctx.route_label(), code = rejection.code(), reason = rejection.label(), error = %e, "request refused");
        }
        // The client's next request may follow on this HTTP/1.1 connection when the
        // answer allows it, the route is known (its idle timeout applies) and apigate
        // is not shutting down.
        let keep_alive = ctx
            .routed
            .as_ref()
            .filter(|_| rejection.keeps_connection() && !self.state.is_draining())
            .map(|r| r.route.upstream.settings.timeouts.idle.as_secs().max(1));
        let audit_id = request_of(session, ctx)
            .headers
            .get(access_log::AUDIT_ID)
            .cloned();
        let reuse = match respond(session, &rejection, keep_alive, audit_id).await {
            Ok(reuse) => reuse,
            Err(write_error) => {
                tracing::debug!(error = %write_error, "could not write error response");
                false
            }
        };
        FailToProxy {
            error_code: rejection.code(),
            can_reuse_downstream: reuse,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(attempts) = ctx.attempts.as_mut() {
            attempts.finish();
        }
        let code = ctx
            .upgraded
            .map(|u| u.status)
            .or_else(|| session.response_written().map(|r| r.status.as_u16()))
            .unwrap_or(0);
        let route = ctx.route_label();
        let elapsed = ctx.started.elapsed();
        let seconds = elapsed.as_secs_f64();
        if let Some(api) = &ctx.api {
            let timed = (!ctx.kind.is_long_running()).then_some(seconds);
            self.state.metrics.api.observe(api, code_label(code), timed);
        }
        self.log_access(session, ctx, code, elapsed);
        match &ctx.routed {
            Some(routed) => {
                let series = &routed.route.upstream.requests;
                let backend = ctx.attempts.as_ref().and_then(|a| a.backend());
                series.count(backend.map(|b| &**b), code, code_label(code));
                if !ctx.kind.is_long_running() {
                    series.observe_duration(seconds);
                }
            }
            // No route known (the connection context is missing): rare, looked up.
            None => {
                let metrics = &self.state.metrics;
                let labels = [route, ctx.backend_label(), code_label(code)];
                metrics.requests.with_label_values(&labels).inc();
                if !ctx.kind.is_long_running() {
                    metrics
                        .request_duration
                        .with_label_values(&[route])
                        .observe(seconds);
                }
            }
        }
        if let Some(e) = e {
            tracing::debug!(route, backend = ctx.backend_label(), code, error = %e, "request failed");
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, error: &Error) -> bool {
        // apigate's own answers are counted and logged (with fields) by
        // `fail_to_proxy`; a client that goes away (a cancelled watch, a killed kubectl)
        // is normal, not an error, and is logged at debug by `logging`.
        ctx.answered_reason.is_some() || error.esource() == &ErrorSource::Downstream
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        _error: &Error,
        _context: pingora::proxy::ProxyWarnLogContext,
    ) -> bool {
        // Failed attempts are counted and logged by the forwarding core.
        true
    }
}

/// Write apigate's own response through the engine's session; returns whether the
/// HTTP/1.1 connection may be reused. With `keep_alive` (seconds of idle allowed) the
/// connection stays open for the client's next request, its unread request body
/// drained by the engine; without, it closes after the answer (pingora's rule for
/// generated errors, and the safe choice when the request or connection is in doubt).
async fn respond(
    session: &mut Session,
    rejection: &Rejection,
    keep_alive: Option<u64>,
    audit_id: Option<http::HeaderValue>,
) -> pingora::Result<bool> {
    let body = rejection.body();
    let mut header = ResponseHeader::build(rejection.code(), Some(5))?;
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("cache-control", "no-store")?;
    // As kube-apiserver answers: the client can quote it, the access log has it.
    if let Some(audit_id) = audit_id {
        header.insert_header("Audit-Id", audit_id)?;
    }
    // client-go waits this long before it retries a 429.
    if let Some(seconds) = rejection.retry_after() {
        header.insert_header("Retry-After", seconds.to_string())?;
    }
    let Some(idle) = keep_alive else {
        session.write_error_response(header, body).await?;
        return Ok(false);
    };
    if session
        .response_written()
        .is_some_and(|r| !r.status.is_informational() || r.status == 101)
    {
        // A response already started: nothing to add, and the connection is in doubt.
        return Ok(false);
    }
    session.set_keepalive(Some(idle));
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}

/// Map a pingora error to the response apigate gives, or `None` when the client is gone.
fn rejection_for(e: &Error, ctx: &RequestCtx) -> Option<Rejection> {
    let route = ctx.route_label();
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
fn code_label(code: u16) -> &'static str {
    match code {
        100..=599 => STATUS_LABELS
            .get(usize::from(code - 100))
            .map_or("0", String::as_str),
        _ => "0",
    }
}

/// "100" … "599", rendered once.
static STATUS_LABELS: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(|| (100..600u16).map(|c| c.to_string()).collect());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_host_drops_port_case_and_trailing_dot() {
        let mut h1 = RequestHeader::build("GET", b"/api", None).unwrap();
        h1.insert_header("Host", "API.Example.com:443").unwrap();
        assert_eq!(requested_host(&h1).as_deref(), Some("api.example.com"));
        let mut v6 = RequestHeader::build("GET", b"/api", None).unwrap();
        v6.insert_header("Host", "[2001:db8::1]:6443").unwrap();
        assert_eq!(requested_host(&v6).as_deref(), Some("2001:db8::1"));
        let mut h2 = RequestHeader::build("GET", b"/api", None).unwrap();
        h2.set_uri(http::Uri::from_static("https://other.example.com./api"));
        assert_eq!(requested_host(&h2).as_deref(), Some("other.example.com"));
        let none = RequestHeader::build("GET", b"/api", None).unwrap();
        assert_eq!(requested_host(&none), None);
    }

    #[test]
    fn head_size_counts_every_header_byte() {
        let mut r = RequestHeader::build("GET", b"/api/v1/pods", None).unwrap();
        let small = head_size(&r);
        r.insert_header("x-big", "a".repeat(1000)).unwrap();
        assert_eq!(head_size(&r), small + "x-big".len() + 1000 + 4);
    }

    #[test]
    fn status_labels_are_bounded() {
        assert_eq!(code_label(200), "200");
        assert_eq!(code_label(599), "599");
        assert_eq!(code_label(0), "0");
        assert_eq!(code_label(600), "0");
    }
}
