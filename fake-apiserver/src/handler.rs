//! Answers one request: authenticate, wait the service time, dispatch on the route, count
//! it, and stamp the replica and identity headers on the response.
//!
//! This is the only place that turns outcomes into HTTP responses, so every response,
//! including errors, 101s and health checks, carries [`crate::REPLICA_HEADER`] and the
//! identity headers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Empty, Full, Limited};
use hyper::body::Incoming;

use crate::identity::{Authenticator, Identity};
use crate::metrics::{Metrics, RequestLabels};
use crate::objects::{self, Catalog, Resource};
use crate::routes::{Probe, Query, Route};
use crate::server::TaskCtx;
use crate::tls::PeerCert;
use crate::watch::WatchBody;
use crate::{upgrade, Condition, ReplicaOptions, ServiceTime};

/// Response body of every answer: small fixed bodies and endless watch streams alike.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Largest request body read (kube's limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;
const JSON: &str = "application/json";

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

pub(crate) fn empty() -> Body {
    Empty::new().boxed_unsync()
}

/// Per-replica state every request reads.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) id: String,
    pub(crate) server_address: String,
    pub(crate) service_time: ServiceTime,
    pub(crate) watch_interval: Duration,
    pub(crate) catalog: Catalog,
    pub(crate) metrics: Metrics,
    pub(crate) auth: Authenticator,
    pub(crate) condition: crate::condition::Current,
    anonymous_auth: bool,
    unavailable_groups: Vec<String>,
    resource_version: AtomicU64,
}

impl Shared {
    pub(crate) fn new(opts: &ReplicaOptions, local: SocketAddr) -> Shared {
        Shared {
            id: opts.id.clone(),
            server_address: local.to_string(),
            service_time: opts.service_time,
            watch_interval: opts.watch_event_interval,
            catalog: Catalog::new(opts.list_size, opts.object_bytes),
            metrics: Metrics::new(),
            auth: Authenticator {
                allowed_names: opts.front_proxy_allowed_names.clone(),
                tokens: opts.tokens.clone(),
            },
            condition: crate::condition::Current::default(),
            anonymous_auth: opts.anonymous_auth,
            unavailable_groups: opts.unavailable_groups.clone(),
            resource_version: AtomicU64::new(100),
        }
    }

    pub(crate) fn next_resource_version(&self) -> u64 {
        self.resource_version.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// What a connection knows about its client, fixed at accept time.
#[derive(Debug)]
pub(crate) struct ConnCtx {
    pub(crate) peer: PeerCert,
    pub(crate) remote: SocketAddr,
    pub(crate) tasks: TaskCtx,
}

fn respond(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn json_ok(status: StatusCode, bytes: Bytes) -> Response<Body> {
    respond(status, JSON, full(bytes))
}

/// A kube `Status` error response.
fn failure(status: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_ok(status, objects::status(status.as_u16(), reason, message))
}

/// A header value from arbitrary text; bytes a header cannot carry become `?`.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| {
        let cleaned: String = text
            .chars()
            .map(|c| {
                if c == '\t' || (' '..='~').contains(&c) {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        HeaderValue::from_str(&cleaned).unwrap_or_else(|_| HeaderValue::from_static("?"))
    })
}

/// kube-apiserver's `utilnet.SourceIPs(req)[0]`: the first `X-Forwarded-For` entry, else
/// `X-Real-Ip`, else the TCP peer.
fn source_ip(headers: &http::HeaderMap, remote: SocketAddr) -> String {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    first("x-forwarded-for")
        .or_else(|| first("x-real-ip"))
        .unwrap_or_else(|| remote.ip().to_string())
}

fn stamp(
    resp: &mut Response<Body>,
    shared: &Shared,
    peer: &PeerCert,
    source: &str,
    identity: Option<&Identity>,
) {
    let h = resp.headers_mut();
    h.insert(crate::SOURCE_IP_HEADER, header_value(source));
    h.insert(crate::REPLICA_HEADER, header_value(&shared.id));
    let presented = if peer.front_proxy {
        "front-proxy"
    } else if peer.client_ca {
        "client"
    } else {
        "none"
    };
    h.insert(crate::PEER_CERT_HEADER, HeaderValue::from_static(presented));
    if let Some(id) = identity {
        h.insert(crate::USER_HEADER, header_value(&id.user));
        h.insert(crate::GROUPS_HEADER, header_value(&id.groups.join(",")));
        h.insert(
            HeaderName::from_static(crate::EXTRA_HEADER),
            header_value(&id.extra_header()),
        );
        h.insert(
            crate::AUTHN_HEADER,
            HeaderValue::from_static(id.method.as_str()),
        );
    }
}

/// The service function of every connection.
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    conn: &ConnCtx,
    req: Request<Incoming>,
) -> Response<Body> {
    let route = Route::classify(req.uri().path());
    let query = Query::parse(req.uri().query());
    let source = source_ip(req.headers(), conn.remote);
    // kube-apiserver answers with the request's audit ID (it makes one when none came;
    // the fake does not, so a test sees whether a proxy sent one).
    let audit_id = req.headers().get("audit-id").cloned();
    let identity = shared
        .auth
        .authenticate(&conn.peer, req.headers())
        .and_then(|id| {
            // `--anonymous-auth=false`: an unauthenticated request is refused.
            if !shared.anonymous_auth && id.method == crate::identity::Method::Anonymous {
                Err("anonymous requests are disabled".to_owned())
            } else {
                Ok(id)
            }
        });
    let condition = shared.condition.get();

    let mut resp = match (&route, &identity) {
        (Route::Health(probe), Ok(_)) => health(shared, *probe),
        (Route::Metrics, Ok(_)) => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            full(shared.metrics.render(&shared.id)),
        ),
        (Route::Health(_) | Route::Metrics, Err(_)) => {
            failure(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
        }
        _ => {
            shared.metrics.request_started();
            let verb = route.verb(req.method(), &query);
            let resp = match &identity {
                Err(reason) => {
                    tracing::debug!(replica = %shared.id, remote = %conn.remote, reason = %reason, "request unauthorized");
                    failure(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
                }
                Ok(_) if condition == Condition::RetryAfterShutdown => {
                    let mut resp = failure(
                        StatusCode::TOO_MANY_REQUESTS,
                        "TooManyRequests",
                        "The apiserver is shutting down, please try again later.",
                    );
                    resp.headers_mut()
                        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
                    resp.headers_mut()
                        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                    resp
                }
                Ok(_) if condition == Condition::Throttling => {
                    let mut resp = failure(
                        StatusCode::TOO_MANY_REQUESTS,
                        "TooManyRequests",
                        "Too many requests, please try again later.",
                    );
                    resp.headers_mut()
                        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
                    resp
                }
                Ok(_) if unavailable_group(shared, req.uri().path()) => failure(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "the server is currently unable to handle the request",
                ),
                Ok(_) => {
                    if verb != "WATCH" {
                        let delay = shared.service_time.sample();
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                    }
                    api(shared, conn, &route, &query, verb, req).await
                }
            };
            let (resource, subresource, scope) = route.metric_target();
            shared.metrics.record(RequestLabels {
                verb,
                code: resp.status().as_u16(),
                resource,
                subresource,
                scope,
            });
            tracing::trace!(replica = %shared.id, verb, resource, subresource, code = resp.status().as_u16(), "answered");
            resp
        }
    };
    stamp(
        &mut resp,
        shared,
        &conn.peer,
        &source,
        identity.as_ref().ok(),
    );
    if let Some(audit_id) = audit_id {
        resp.headers_mut().insert("audit-id", audit_id);
    }
    resp
}

fn health(shared: &Shared, probe: Probe) -> Response<Body> {
    let text = "text/plain; charset=utf-8";
    if probe == Probe::Ready {
        if let Some(body) = shared.condition.get().readyz_failure() {
            return respond(StatusCode::INTERNAL_SERVER_ERROR, text, full(body));
        }
    }
    respond(StatusCode::OK, text, full("ok"))
}

/// A path of an aggregated API whose APIService is unavailable: kube-aggregator answers
/// 503 for it, on every replica alike, whoever asks.
fn unavailable_group(shared: &Shared, path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/apis/") else {
        return false;
    };
    let group = rest.split('/').next().unwrap_or_default();
    shared.unavailable_groups.iter().any(|g| g == group)
}

fn method_not_allowed(method: &Method) -> Response<Body> {
    failure(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        &format!("the server does not allow this method on the requested resource ({method})"),
    )
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "request body too large",
        )),
        Err(e) => Err(failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("reading request body: {e}"),
        )),
    }
}

async fn api(
    shared: &Arc<Shared>,
    conn: &ConnCtx,
    route: &Route,
    query: &Query,
    verb: &'static str,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let method = req.method().clone();
    let get_only = |bytes: fn() -> Bytes| {
        if method == Method::GET {
            json_ok(StatusCode::OK, bytes())
        } else {
            method_not_allowed(&method)
        }
    };
    match route {
        Route::Version => get_only(objects::version),
        Route::ApiGroupList => get_only(objects::api_group_list),
        Route::CoreResources => get_only(objects::core_resources),
        Route::ApiVersions if method == Method::GET => json_ok(
            StatusCode::OK,
            objects::api_versions(&shared.server_address),
        ),
        Route::ApiVersions => method_not_allowed(&method),
        Route::Collection {
            resource,
            namespace,
            ..
        } => match (verb, namespace) {
            ("WATCH", ns) => {
                let body = WatchBody::new(
                    shared.clone(),
                    *resource,
                    ns.as_deref(),
                    shared.watch_interval,
                    query.timeout,
                );
                tracing::debug!(replica = %shared.id, resource = resource.name(), namespace = ?ns, timeout = ?query.timeout, "watch opened");
                respond(StatusCode::OK, JSON, UnsyncBoxBody::new(body))
            }
            ("LIST", ns) => json_ok(
                StatusCode::OK,
                shared.catalog.list(*resource, ns.as_deref()),
            ),
            ("POST", Some(ns)) => match read_body(req).await {
                Ok(body) => {
                    let rv = shared.next_resource_version();
                    let obj = shared.catalog.accept_write(*resource, ns, None, &body, rv);
                    json_ok(StatusCode::CREATED, objects::to_bytes(&obj))
                }
                Err(resp) => resp,
            },
            _ => method_not_allowed(&method),
        },
        Route::Object {
            resource,
            namespace,
            name,
        } => object(shared, req, *resource, namespace, name).await,
        Route::Connect { connect, .. } => match upgrade::accept(&mut req, &conn.tasks) {
            Ok(resp) => {
                tracing::debug!(replica = %shared.id, subresource = connect.name(), remote = %conn.remote, "connection upgraded");
                resp
            }
            Err(upgrade::Refused(message)) => {
                failure(StatusCode::BAD_REQUEST, "BadRequest", message)
            }
        },
        Route::NotFound | Route::Health(_) | Route::Metrics => failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}

async fn object(
    shared: &Shared,
    req: Request<Incoming>,
    resource: Resource,
    namespace: &str,
    name: &str,
) -> Response<Body> {
    let method = req.method().clone();
    match method {
        Method::GET => {
            let rv = shared.next_resource_version();
            let obj = shared.catalog.object(resource, namespace, name, rv, true);
            json_ok(StatusCode::OK, objects::to_bytes(&obj))
        }
        Method::PUT | Method::PATCH => match read_body(req).await {
            Ok(body) => {
                let rv = shared.next_resource_version();
                // A patch is not applied; the answer is the (made-up) current object.
                let body: &[u8] = if method == Method::PUT { &body } else { b"" };
                let obj = shared
                    .catalog
                    .accept_write(resource, namespace, Some(name), body, rv);
                json_ok(StatusCode::OK, objects::to_bytes(&obj))
            }
            Err(resp) => resp,
        },
        Method::DELETE => json_ok(StatusCode::OK, objects::deleted(resource, name)),
        _ => method_not_allowed(&method),
    }
}
