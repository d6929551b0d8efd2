//! Responses apigate produces itself: one taxonomy, one place that says what each
//! looks like.
//!
//! Every response apigate generates carries a kube-style `Status` JSON body, so kubectl
//! and client-go print a readable message instead of "unknown error", and each rejection
//! has a stable metric label. Two writers use this: the HTTP hooks
//! ([`crate::http`], through the engine's session) and the transport, for the few
//! answers given before a request reaches the hooks ([`Rejection::http1_response`]).

use bytes::Bytes;

use crate::flow::limiter::Throttled;

/// Why apigate answered a request itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The verified client certificate has no usable identity (empty CN, bad characters).
    InvalidClientCertificate(String),
    /// The connection reached apigate without the per-connection context (internal bug).
    MissingConnectionContext,
    /// The route this connection was opened for no longer exists, or no longer
    /// terminates TLS.
    RouteGone(String),
    /// The request names a host served by another route than its connection's
    /// (RFC 9110 §15.5.20); the client should retry on a new connection.
    Misdirected(String),
    /// The request head is larger than `maxRequestHeaderBytes`.
    HeaderTooLarge(usize),
    /// A method apigate does not proxy (`CONNECT` on a terminated connection).
    MethodNotAllowed(String),
    /// The route has no backend that could be tried.
    NoBackend(String),
    /// The chosen backend(s) could not be reached or broke the exchange.
    UpstreamUnavailable(String),
    /// A backend did not answer in time.
    UpstreamTimeout(String),
    /// The client sent something that cannot be proxied.
    BadRequest(String),
    /// Flow control refused the request: 429 with `Retry-After`.
    TooManyRequests(Throttled),
    /// Any other failure inside apigate.
    Internal(String),
}

impl Rejection {
    /// The answer to a request the HTTP engine could not parse, by the status the
    /// engine chose.
    pub fn for_unparsed_request(code: u16) -> Rejection {
        match code {
            431 => Rejection::HeaderTooLarge(0),
            405 => Rejection::MethodNotAllowed("CONNECT".into()),
            _ => Rejection::BadRequest("malformed HTTP/1.1 request".into()),
        }
    }

    /// Whether the client's HTTP/1.1 connection may carry its next request after this
    /// answer. Yes when the request was whole and the connection is sound: a method
    /// apigate does not proxy, another route's host, a head over the route's limit, no
    /// or failing replicas. No when the request's framing, the connection's identity or
    /// its route is in doubt (a bad request, an invalid client certificate, a route
    /// gone) or apigate's own state is (internal errors).
    pub fn keeps_connection(&self) -> bool {
        match self {
            Rejection::MethodNotAllowed(_)
            | Rejection::Misdirected(_)
            | Rejection::HeaderTooLarge(_)
            | Rejection::NoBackend(_)
            | Rejection::UpstreamUnavailable(_)
            | Rejection::UpstreamTimeout(_)
            | Rejection::TooManyRequests(_) => true,
            Rejection::BadRequest(_)
            | Rejection::InvalidClientCertificate(_)
            | Rejection::RouteGone(_)
            | Rejection::MissingConnectionContext
            | Rejection::Internal(_) => false,
        }
    }

    /// HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            Rejection::InvalidClientCertificate(_) | Rejection::BadRequest(_) => 400,
            Rejection::MethodNotAllowed(_) => 405,
            Rejection::RouteGone(_) | Rejection::Misdirected(_) => 421,
            Rejection::HeaderTooLarge(_) => 431,
            Rejection::TooManyRequests(_) => 429,
            Rejection::MissingConnectionContext | Rejection::Internal(_) => 500,
            Rejection::UpstreamUnavailable(_) => 502,
            Rejection::NoBackend(_) => 503,
            Rejection::UpstreamTimeout(_) => 504,
        }
    }

    /// kube `Status.reason`.
    fn reason(&self) -> &'static str {
        match self.code() {
            400 | 431 => "BadRequest",
            405 => "MethodNotAllowed",
            429 => "TooManyRequests",
            421 => "NotFound",
            503 | 502 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        }
    }

    /// Reason phrase of the status line.
    fn phrase(&self) -> &'static str {
        match self.code() {
            400 => "Bad Request",
            405 => "Method Not Allowed",
            421 => "Misdirected Request",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            _ => "Internal Server Error",
        }
    }

    /// Stable metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::InvalidClientCertificate(_) => "invalid_client_certificate",
            Rejection::MissingConnectionContext => "missing_connection_context",
            Rejection::RouteGone(_) => "route_gone",
            Rejection::Misdirected(_) => "misdirected",
            Rejection::HeaderTooLarge(_) => "header_too_large",
            Rejection::MethodNotAllowed(_) => "method_not_allowed",
            Rejection::NoBackend(_) => "no_backend",
            Rejection::UpstreamUnavailable(_) => "upstream_unavailable",
            Rejection::UpstreamTimeout(_) => "upstream_timeout",
            Rejection::BadRequest(_) => "bad_request",
            Rejection::TooManyRequests(_) => "too_many_requests",
            Rejection::Internal(_) => "internal",
        }
    }

    /// Human-readable message for the `Status` body.
    pub fn message(&self) -> String {
        match self {
            Rejection::InvalidClientCertificate(m) => format!("apigate: {m}"),
            Rejection::MissingConnectionContext => {
                "apigate: connection context missing (internal error)".into()
            }
            Rejection::RouteGone(route) => {
                format!("apigate: API server route {route} is no longer served on this connection; reconnect")
            }
            Rejection::Misdirected(host) => format!(
                "apigate: {host} is served by another API server route than this connection's; reconnect to it"
            ),
            Rejection::HeaderTooLarge(0) => {
                "apigate: request header fields too large".to_string()
            }
            Rejection::HeaderTooLarge(limit) => {
                format!("apigate: request header fields larger than {limit} bytes")
            }
            Rejection::MethodNotAllowed(method) => {
                format!("apigate: method {method} is not proxied")
            }
            Rejection::NoBackend(route) => {
                format!("apigate: no API server replica available for {route}")
            }
            Rejection::UpstreamUnavailable(m) => format!("apigate: API server unreachable: {m}"),
            Rejection::UpstreamTimeout(m) => format!("apigate: API server timed out: {m}"),
            Rejection::BadRequest(m) => format!("apigate: bad request: {m}"),
            Rejection::TooManyRequests(t) => match &t.policy {
                Some(policy) => format!(
                    "apigate: too many requests: flow-control policy {policy} ({}); retry after {} s",
                    t.reason.label(),
                    t.retry_after
                ),
                None => format!(
                    "apigate: too many requests: the API server's route is at its limit ({}); retry after {} s",
                    t.reason.label(),
                    t.retry_after
                ),
            },
            Rejection::Internal(m) => format!("apigate: internal error: {m}"),
        }
    }

    /// Seconds the client should wait before retrying (`Retry-After`), for a 429.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            Rejection::TooManyRequests(t) => Some(t.retry_after),
            _ => None,
        }
    }

    /// The kube `Status` JSON body (with `details.retryAfterSeconds` for a 429, as
    /// kube-apiserver writes it).
    pub fn body(&self) -> Bytes {
        let mut status = serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message(),
            "reason": self.reason(),
            "code": self.code(),
        });
        if let Some(seconds) = self.retry_after() {
            status["details"] = serde_json::json!({ "retryAfterSeconds": seconds });
        }
        Bytes::from(status.to_string())
    }

    /// The whole HTTP/1.1 response, closing the connection: for answers written below
    /// the HTTP engine.
    pub fn http1_response(&self) -> Bytes {
        self.http1_response_for(None)
    }

    /// [`Rejection::http1_response`] for a request whose audit ID is known: it goes back
    /// as `Audit-Id`, as from the HTTP hooks.
    pub fn http1_response_for(&self, audit_id: Option<&http::HeaderValue>) -> Bytes {
        let body = self.body();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n",
            self.code(),
            self.phrase(),
            body.len()
        )
        .into_bytes();
        if let Some(id) = audit_id {
            out.extend_from_slice(b"audit-id: ");
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_a_kube_status() {
        let r = Rejection::NoBackend("ns/a".into());
        let v: serde_json::Value = serde_json::from_slice(&r.body()).unwrap();
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["code"], 503);
        assert_eq!(v["reason"], "ServiceUnavailable");
        assert!(v["message"].as_str().unwrap().contains("ns/a"));
    }

    #[test]
    fn empty_common_name_is_a_400() {
        let r = Rejection::InvalidClientCertificate(
            "client certificate has an empty Common Name".into(),
        );
        assert_eq!(r.code(), 400);
        assert_eq!(r.label(), "invalid_client_certificate");
    }

    #[test]
    fn raw_responses_parse_and_carry_the_status_body() {
        let bytes = Rejection::HeaderTooLarge(65536).http1_response();
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head) = response.parse(&bytes).unwrap() else {
            panic!("incomplete");
        };
        assert_eq!(response.code, Some(431));
        let v: serde_json::Value = serde_json::from_slice(&bytes[head..]).unwrap();
        assert_eq!(v["code"], 431);
        assert!(v["message"].as_str().unwrap().contains("65536"));
        // With an audit ID, it goes back as a header of its own.
        let id = http::HeaderValue::from_static("abc-1");
        let bytes = Rejection::NoBackend("r".into()).http1_response_for(Some(&id));
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut response = httparse::Response::new(&mut headers);
        assert!(response.parse(&bytes).unwrap().is_complete());
        let audit = response
            .headers
            .iter()
            .find(|h| h.name == "audit-id")
            .unwrap();
        assert_eq!(audit.value, b"abc-1");
    }
}
