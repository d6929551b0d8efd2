//! Flow control on the request path: who the client is, which policy its request
//! meets, and the route's [`limiter::RouteFlow`] that admits, queues or refuses it.
//!
//! A client is a verified client certificate's user (only its groups match and exempt),
//! else its bearer token's [`token_id`] (unchecked: apigate cannot verify a token, so a
//! client with ever new tokens is ever a new client; the route's cap still holds), else
//! `anonymous`, whose requests are told apart by address for fairness and limits. A refused request gets a
//! 429 kube `Status` with `Retry-After` ([`crate::rejection::Rejection::TooManyRequests`]),
//! and its connection stays open.

pub mod limiter;

use std::sync::{Arc, Mutex};

use apigate_control::flow_settings::{FlowControl, FlowRequest};
use apigate_control::RouteId;
use pingora::http::RequestHeader;

use self::limiter::{Ask, Permit, RouteFlow, Throttled};
use crate::conn::{ClientName, ConnCtx};
use crate::http::request_info::{decoded_path, RequestInfo};
use crate::weak_map::WeakMap;

/// Each route's flow-control state, shared across configurations while a route runs.
#[derive(Default)]
pub struct FlowRegistry {
    flows: Mutex<WeakMap<RouteId, RouteFlow>>,
}

impl FlowRegistry {
    /// The state of route `id`: the one it had, or a new one.
    pub fn for_route(&self, id: &RouteId) -> Arc<RouteFlow> {
        let mut flows = self
            .flows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(flow) = flows.get(id) {
            return flow;
        }
        let flow = Arc::new(RouteFlow::default());
        flows.insert(id.clone(), &flow);
        flow
    }
}

/// Admit a request under its route's flow control: `Ok(None)` when it is exempt,
/// `Ok(Some(permit))` to hold until it ends, or the refusal.
pub async fn admit(
    flow: &Arc<RouteFlow>,
    settings: &FlowControl,
    conn: &ConnCtx,
    request: &RequestHeader,
    long_running: bool,
    upgrade: bool,
) -> Result<Option<Permit>, Throttled> {
    let authorization = request.headers.get(http::header::AUTHORIZATION);
    let name = conn
        .client
        .name(authorization.map(http::HeaderValue::as_bytes));
    let (groups, verified): (&[String], bool) = match &name {
        ClientName::Certificate(identity) => (&identity.groups, true),
        ClientName::Token(_) | ClientName::Anonymous => (&[], false),
    };
    let user = name.user();
    let anonymous;
    let key = match &name {
        ClientName::Anonymous => {
            anonymous = format!("anonymous@{}", conn.peer.ip().to_canonical());
            anonymous.as_str()
        }
        ClientName::Certificate(_) | ClientName::Token(_) => user,
    };
    let query = request.uri.query().unwrap_or("");
    let path = decoded_path(request.uri.path());
    let info = RequestInfo::parse(&request.method, &path, query, upgrade);
    let target = info.target;
    let asked = FlowRequest {
        user,
        groups,
        source: conn.peer.ip(),
        verb: info.verb.as_str(),
        resource: target.map(|t| (t.group, t.resource)),
        namespace: target.map_or("", |t| t.namespace),
        path: &path,
    };
    if settings.is_exempt(&asked, verified) {
        return Ok(None);
    }
    let ask = Ask {
        client: key,
        policy: settings.policy_for(&asked),
        long_running,
    };
    flow.admit(settings, ask).await.map(Some)
}
