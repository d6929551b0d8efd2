//! Which requests are long-running, and which are protocol upgrades.
//!
//! Long-running requests (watches, `exec`/`attach`/`portforward`/`proxy`, followed logs)
//! get the long-running timeout and are counted apart from ordinary requests, so a
//! replica holding many open watches is not mistaken for a busy one.

use pingora::http::RequestHeader;

use super::request_info::RequestInfo;

/// How a request is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A normal request-response.
    Ordinary,
    /// A watch or followed log: a long, streamed response.
    LongRunning,
    /// An HTTP/1.1 upgrade (WebSocket or SPDY): a long-lived byte stream.
    Upgrade,
}

impl Kind {
    /// Whether the request holds its backend for a long time.
    pub fn is_long_running(self) -> bool {
        !matches!(self, Kind::Ordinary)
    }
}

/// Classify a request like kube-apiserver's long-running check does (a log is
/// long-running only when followed), and read what it asks for: one parse serves both.
/// `path` is the request's path decoded ([`super::request_info::decoded_path`]).
pub fn classify<'a>(request: &RequestHeader, path: &'a str) -> (Kind, RequestInfo<'a>) {
    let upgrade = is_upgrade(request);
    let query = request.uri.query().unwrap_or("");
    let info = RequestInfo::parse(&request.method, path, query, upgrade);
    let kind = if upgrade {
        Kind::Upgrade
    } else if info.is_long_running(query) {
        Kind::LongRunning
    } else {
        Kind::Ordinary
    };
    (kind, info)
}

/// An HTTP/1.1 request asking to switch protocols (`Upgrade` header present).
pub fn is_upgrade(request: &RequestHeader) -> bool {
    request.version == http::Version::HTTP_11 && request.headers.contains_key(http::header::UPGRADE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn classifies_kube_requests() {
        use Kind::*;
        let cases = [
            ("/api/v1/namespaces/default/pods", Ordinary),
            (
                "/api/v1/namespaces/default/pods?watch=true&resourceVersion=1",
                LongRunning,
            ),
            (
                "/apis/apps/v1/deployments?labelSelector=a&watch=1",
                LongRunning,
            ),
            ("/api/v1/pods?watch=false", Ordinary),
            ("/api/v1/watch/namespaces/default/pods", LongRunning),
            ("/apis/apps/v1/watch/deployments", LongRunning),
            ("/api/v1/namespaces/default/pods/p/log", Ordinary),
            (
                "/api/v1/namespaces/default/pods/p/log?follow=true",
                LongRunning,
            ),
            (
                "/api/v1/namespaces/default/pods/p/exec?command=sh",
                LongRunning,
            ),
            (
                "/api/v1/namespaces/default/services/s/proxy/metrics",
                LongRunning,
            ),
            ("/api/v1/namespaces/watch/pods", Ordinary),
        ];
        for (path, kind) in cases {
            assert_eq!(
                classify(&req(path, &[]), path.split('?').next().unwrap()).0,
                kind,
                "{path}"
            );
        }
    }

    #[test]
    fn upgrades_are_detected_on_http11_only() {
        let r = req(
            "/api/v1/namespaces/d/pods/p/exec",
            &[("Upgrade", "SPDY/3.1"), ("Connection", "Upgrade")],
        );
        assert_eq!(classify(&r, r.uri.path()).0, Kind::Upgrade);
        let mut h2 = r.clone();
        h2.set_version(http::Version::HTTP_2);
        assert_eq!(classify(&h2, h2.uri.path()).0, Kind::LongRunning);
    }
}
