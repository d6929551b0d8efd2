//! Responses apigate produces itself: one taxonomy, one place that writes them.
//!
//! Every response apigate generates carries a kube-style `Status` JSON body, so kubectl
//! and client-go print a readable message instead of "unknown error". Each rejection has
//! a stable metric label.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

/// Why apigate answered a request itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The verified client certificate has no usable identity (empty CN, bad characters).
    InvalidClientCertificate(String),
    /// The connection reached apigate without the per-connection context (internal bug).
    MissingConnectionContext,
    /// The route this connection was opened for no longer exists.
    RouteGone(String),
    /// The route has no backend that could be tried.
    NoBackend(String),
    /// Connecting to the chosen backend(s) failed.
    UpstreamUnavailable(String),
    /// A backend did not answer in time.
    UpstreamTimeout(String),
    /// The client sent something that cannot be proxied.
    BadRequest(String),
    /// Any other failure inside apigate.
    Internal(String),
}

impl Rejection {
    /// HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            Rejection::InvalidClientCertificate(_) | Rejection::BadRequest(_) => 400,
            Rejection::RouteGone(_) => 421,
            Rejection::MissingConnectionContext | Rejection::Internal(_) => 500,
            Rejection::UpstreamUnavailable(_) => 502,
            Rejection::NoBackend(_) => 503,
            Rejection::UpstreamTimeout(_) => 504,
        }
    }

    /// kube `Status.reason`.
    fn reason(&self) -> &'static str {
        match self.code() {
            400 => "BadRequest",
            421 => "NotFound",
            503 | 502 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        }
    }

    /// Stable metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::InvalidClientCertificate(_) => "invalid_client_certificate",
            Rejection::MissingConnectionContext => "missing_connection_context",
            Rejection::RouteGone(_) => "route_gone",
            Rejection::NoBackend(_) => "no_backend",
            Rejection::UpstreamUnavailable(_) => "upstream_unavailable",
            Rejection::UpstreamTimeout(_) => "upstream_timeout",
            Rejection::BadRequest(_) => "bad_request",
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
                format!("apigate: API server route {route} no longer exists; reconnect")
            }
            Rejection::NoBackend(route) => {
                format!("apigate: no API server replica available for {route}")
            }
            Rejection::UpstreamUnavailable(m) => format!("apigate: API server unreachable: {m}"),
            Rejection::UpstreamTimeout(m) => format!("apigate: API server timed out: {m}"),
            Rejection::BadRequest(m) => format!("apigate: bad request: {m}"),
            Rejection::Internal(m) => format!("apigate: internal error: {m}"),
        }
    }

    /// The kube `Status` JSON body.
    pub fn body(&self) -> Bytes {
        let status = serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message(),
            "reason": self.reason(),
            "code": self.code(),
        });
        Bytes::from(status.to_string())
    }

    /// Write the response. The connection is not reused afterwards (pingora's rule for
    /// generated errors), which is also the safe choice after a failure.
    pub async fn respond(&self, session: &mut Session) -> pingora::Result<()> {
        let body = self.body();
        let mut header = ResponseHeader::build(self.code(), Some(3))?;
        header.insert_header("content-type", "application/json")?;
        header.insert_header("content-length", body.len().to_string())?;
        header.insert_header("cache-control", "no-store")?;
        session.write_error_response(header, body).await
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
}
