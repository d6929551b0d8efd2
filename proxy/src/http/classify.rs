//! Which requests are long-running, and which are protocol upgrades.
//!
//! Long-running requests (watches, `exec`/`attach`/`portforward`/`proxy`, followed logs)
//! get the long-running timeout and are counted apart from ordinary requests, so a
//! replica holding many open watches is not mistaken for a busy one.

use pingora::http::RequestHeader;

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

/// Classify a request like kube-apiserver's long-running check does.
pub fn classify(request: &RequestHeader) -> Kind {
    if is_upgrade(request) {
        return Kind::Upgrade;
    }
    let path = request.uri.path();
    let query = request.uri.query().unwrap_or("");
    let param = |name: &str| {
        query.split('&').any(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            k == name && (v == "true" || v == "1")
        })
    };
    if param("watch") {
        return Kind::LongRunning;
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // Legacy watch paths: /api/v1/watch/..., /apis/<group>/<version>/watch/...
    let watch_at = match segments.first() {
        Some(&"api") => 2,
        Some(&"apis") => 3,
        _ => usize::MAX,
    };
    if segments.get(watch_at) == Some(&"watch") {
        return Kind::LongRunning;
    }
    match segments.last() {
        Some(&"exec" | &"attach" | &"portforward") => Kind::LongRunning,
        Some(&"log") if param("follow") => Kind::LongRunning,
        _ if segments.contains(&"proxy") => Kind::LongRunning,
        _ => Kind::Ordinary,
    }
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
            assert_eq!(classify(&req(path, &[])), kind, "{path}");
        }
    }

    #[test]
    fn upgrades_are_detected_on_http11_only() {
        let r = req(
            "/api/v1/namespaces/d/pods/p/exec",
            &[("Upgrade", "SPDY/3.1"), ("Connection", "Upgrade")],
        );
        assert_eq!(classify(&r), Kind::Upgrade);
        let mut h2 = r.clone();
        h2.set_version(http::Version::HTTP_2);
        assert_eq!(classify(&h2), Kind::LongRunning);
    }
}
