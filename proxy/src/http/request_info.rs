//! What a request asks of the API server, read from its method and path the way
//! kube-apiserver's `RequestInfoFactory` reads them: verb, API group, resource,
//! subresource, namespace and name, or a non-resource URL.
//!
//! One parser serves every consumer: the long-running classification, the per-verb
//! metrics, flow control and the access log. It borrows from the request's path, which
//! callers percent-decode first (a copy only when it has escapes).

use std::borrow::Cow;

use http::Method;

/// The verb kube-apiserver's authorizer and audit log would name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// GET (or HEAD) of one named object.
    Get,
    /// GET of a collection.
    List,
    /// A watch: `?watch` on a collection, or the legacy `/watch/` path.
    Watch,
    /// POST to a resource.
    Create,
    /// PUT.
    Update,
    /// PATCH.
    Patch,
    /// DELETE of one named object.
    Delete,
    /// DELETE of a collection.
    DeleteCollection,
    /// The legacy `/proxy/` path.
    Proxy,
    /// An HTTP/1.1 upgrade (`exec`, `attach`, `port-forward` over SPDY or WebSocket).
    Connect,
    /// A method kube-apiserver gives no resource verb (OPTIONS on a resource).
    Unknown,
    /// A non-resource URL: the method, lowercased, is the verb.
    NonResource(NonResourceMethod),
}

/// Methods of non-resource requests (kube-apiserver lowercases the method).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonResourceMethod {
    /// `get`
    Get,
    /// `head`
    Head,
    /// `post`
    Post,
    /// `put`
    Put,
    /// `patch`
    Patch,
    /// `delete`
    Delete,
    /// `options`
    Options,
    /// Any other method.
    Other,
}

impl Verb {
    /// The verb as kube-apiserver's authorizer and audit log spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
            Verb::Proxy => "proxy",
            Verb::Connect => "connect",
            Verb::Unknown => "unknown",
            Verb::NonResource(method) => match method {
                NonResourceMethod::Get => "get",
                NonResourceMethod::Head => "head",
                NonResourceMethod::Post => "post",
                NonResourceMethod::Put => "put",
                NonResourceMethod::Patch => "patch",
                NonResourceMethod::Delete => "delete",
                NonResourceMethod::Options => "options",
                NonResourceMethod::Other => "other",
            },
        }
    }
}

/// The object a resource request addresses. Empty strings where the path has no part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Target<'a> {
    /// API group (`""` for the core group under `/api`).
    pub group: &'a str,
    /// API version.
    pub version: &'a str,
    /// Resource, e.g. `pods`.
    pub resource: &'a str,
    /// Subresource, e.g. `status`, `log`, `exec`.
    pub subresource: &'a str,
    /// Namespace, `""` for cluster-scoped requests.
    pub namespace: &'a str,
    /// Object name, `""` for collections.
    pub name: &'a str,
}

/// A request as the API server will understand it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestInfo<'a> {
    /// What it does.
    pub verb: Verb,
    /// What it addresses; `None` for non-resource URLs (`/healthz`, `/version`, `/api`).
    pub target: Option<Target<'a>>,
}

impl<'a> RequestInfo<'a> {
    /// Read a request. `upgrade` marks an HTTP/1.1 upgrade (verb `connect`).
    pub fn parse(method: &Method, path: &'a str, query: &str, upgrade: bool) -> RequestInfo<'a> {
        match resource(method, path, query) {
            Some((verb, target)) => RequestInfo {
                verb: if upgrade { Verb::Connect } else { verb },
                target: Some(target),
            },
            None => RequestInfo {
                verb: if upgrade {
                    Verb::Connect
                } else {
                    Verb::NonResource(non_resource_method(method))
                },
                target: None,
            },
        }
    }

    /// A watch, a followed log, `exec`/`attach`/`port-forward` or a proxied
    /// connection: a request that holds its replica for as long as the client likes.
    pub fn is_long_running(&self, query: &str) -> bool {
        if matches!(self.verb, Verb::Watch | Verb::Proxy | Verb::Connect) {
            return true;
        }
        let Some(target) = &self.target else {
            return false;
        };
        // kube-apiserver's long-running check, by verb and subresource only: `?watch`
        // on a named object or a write is not a watch (and must not escape the limits
        // of ordinary requests). A log is long-running only when followed.
        match target.subresource {
            "exec" | "attach" | "portforward" | "proxy" => true,
            "log" => flag(query, "follow"),
            _ => false,
        }
    }
}

/// The path as kube-apiserver reads it: percent-escapes decoded (Go's `URL.Path`), so
/// `/api/v1/namespaces/kube%2Dsystem/p%6Fds` is read as what it names. Allocates only
/// for a path with escapes; an escape that is not two hex digits stays as written.
pub fn decoded_path(path: &str) -> Cow<'_, str> {
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// kube-apiserver's lowercased method of a non-resource request.
fn non_resource_method(method: &Method) -> NonResourceMethod {
    match *method {
        Method::GET => NonResourceMethod::Get,
        Method::HEAD => NonResourceMethod::Head,
        Method::POST => NonResourceMethod::Post,
        Method::PUT => NonResourceMethod::Put,
        Method::PATCH => NonResourceMethod::Patch,
        Method::DELETE => NonResourceMethod::Delete,
        Method::OPTIONS => NonResourceMethod::Options,
        _ => NonResourceMethod::Other,
    }
}

/// The first value of a boolean query parameter as kube-apiserver decodes it: present
/// and neither `false` nor `0` (any case) is true, an empty value included.
fn flag(query: &str, name: &str) -> bool {
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(key, _)| *key == name)
        .is_some_and(|(_, value)| !(value.eq_ignore_ascii_case("false") || value == "0"))
}

/// The resource request a path names, or `None` for a non-resource URL. Follows
/// kube-apiserver's `RequestInfoFactory.NewRequestInfo`.
fn resource<'a>(method: &Method, path: &'a str, query: &str) -> Option<(Verb, Target<'a>)> {
    let mut parts = path.trim_matches('/').split('/');
    let mut target = Target::default();
    match parts.next()? {
        "api" => {}
        "apis" => target.group = parts.next()?,
        _ => return None,
    }
    target.version = parts.next()?;
    let rest: Vec<&str> = parts.collect();
    // `/api`, `/api/v1`, `/apis/apps/v1` are discovery: non-resource.
    let (verb, mut rest) = match rest.split_first() {
        None | Some((&"", _)) => return None,
        Some((&"watch", tail)) if !tail.is_empty() => (Some(Verb::Watch), tail),
        Some((&"proxy", tail)) if !tail.is_empty() => (Some(Verb::Proxy), tail),
        // kube-apiserver refuses a bare special verb; treat it as non-resource.
        Some((&("watch" | "proxy"), _)) => return None,
        Some(_) => (None, rest.as_slice()),
    };
    if rest.first() == Some(&"namespaces") {
        if let Some(namespace) = rest.get(1) {
            target.namespace = namespace;
            // `namespaces/{ns}/status` and `/finalize` are the namespace's own
            // subresources; anything else after the name is a namespaced resource.
            if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
                rest = &rest[2..];
            }
        }
    }
    target.resource = rest.first().copied().unwrap_or("");
    target.name = rest.get(1).copied().unwrap_or("");
    if verb != Some(Verb::Proxy) {
        target.subresource = rest.get(2).copied().unwrap_or("");
    }
    let verb = verb.unwrap_or_else(|| {
        let named = !target.name.is_empty();
        match *method {
            Method::GET | Method::HEAD if named => Verb::Get,
            Method::GET | Method::HEAD if flag(query, "watch") => Verb::Watch,
            Method::GET | Method::HEAD => Verb::List,
            Method::POST => Verb::Create,
            Method::PUT => Verb::Update,
            Method::PATCH => Verb::Patch,
            Method::DELETE if named => Verb::Delete,
            Method::DELETE => Verb::DeleteCollection,
            _ => Verb::Unknown,
        }
    });
    Some((verb, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(method: &str, uri: &str) -> (String, Option<Target<'static>>) {
        let uri: &'static str = Box::leak(uri.to_string().into_boxed_str());
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let info = RequestInfo::parse(&method, path, query, false);
        (info.verb.as_str().to_string(), info.target)
    }

    fn target(
        group: &'static str,
        resource: &'static str,
        subresource: &'static str,
        namespace: &'static str,
        name: &'static str,
    ) -> Option<Target<'static>> {
        Some(Target {
            group,
            version: "v1",
            resource,
            subresource,
            namespace,
            name,
        })
    }

    #[test]
    fn reads_resource_requests_like_kube_apiserver() {
        let cases = [
            (
                "GET",
                "/api/v1/pods",
                "list",
                target("", "pods", "", "", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/d/pods?watch=true&resourceVersion=1",
                "watch",
                target("", "pods", "", "d", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/d/pods?watch=false",
                "list",
                target("", "pods", "", "d", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/d/pods?watch",
                "watch",
                target("", "pods", "", "d", ""),
            ),
            (
                "GET",
                "/api/v1/watch/namespaces/d/pods",
                "watch",
                target("", "pods", "", "d", ""),
            ),
            (
                "GET",
                "/apis/apps/v1/namespaces/d/deployments/web",
                "get",
                target("apps", "deployments", "", "d", "web"),
            ),
            (
                "PATCH",
                "/apis/apps/v1/namespaces/d/deployments/web/scale",
                "patch",
                target("apps", "deployments", "scale", "d", "web"),
            ),
            (
                "POST",
                "/api/v1/namespaces/d/pods",
                "create",
                target("", "pods", "", "d", ""),
            ),
            (
                "PUT",
                "/api/v1/namespaces/d/pods/p/status",
                "update",
                target("", "pods", "status", "d", "p"),
            ),
            (
                "DELETE",
                "/api/v1/namespaces/d/pods/p",
                "delete",
                target("", "pods", "", "d", "p"),
            ),
            (
                "DELETE",
                "/api/v1/namespaces/d/pods",
                "deletecollection",
                target("", "pods", "", "d", ""),
            ),
            // A namespace is an object of its own, with its own subresources.
            (
                "GET",
                "/api/v1/namespaces/d",
                "get",
                target("", "namespaces", "", "d", "d"),
            ),
            (
                "PUT",
                "/api/v1/namespaces/d/finalize",
                "update",
                target("", "namespaces", "finalize", "d", "d"),
            ),
            (
                "GET",
                "/api/v1/nodes",
                "list",
                target("", "nodes", "", "", ""),
            ),
            (
                "GET",
                "/api/v1/namespaces/watch/pods",
                "list",
                target("", "pods", "", "watch", ""),
            ),
            (
                "GET",
                "/api/v1/proxy/namespaces/d/services/s/metrics",
                "proxy",
                target("", "services", "", "d", "s"),
            ),
            (
                "OPTIONS",
                "/api/v1/pods",
                "unknown",
                target("", "pods", "", "", ""),
            ),
        ];
        for (method, uri, verb, want) in cases {
            assert_eq!(
                info(method, uri),
                (verb.to_string(), want),
                "{method} {uri}"
            );
        }
    }

    #[test]
    fn discovery_and_other_urls_are_non_resource() {
        for (method, uri, verb) in [
            ("GET", "/api", "get"),
            ("GET", "/api/v1", "get"),
            ("GET", "/apis/apps/v1", "get"),
            ("GET", "/apis/apps/v1/", "get"),
            ("GET", "/healthz", "get"),
            ("POST", "/version", "post"),
            ("GET", "/api/v1/watch", "get"),
            ("HEAD", "/", "head"),
        ] {
            assert_eq!(
                info(method, uri),
                (verb.to_string(), None),
                "{method} {uri}"
            );
        }
    }

    #[test]
    fn upgrades_are_connect() {
        let info = RequestInfo::parse(
            &Method::POST,
            "/api/v1/namespaces/d/pods/p/exec",
            "command=sh",
            true,
        );
        assert_eq!(info.verb, Verb::Connect);
        assert_eq!(info.target.map(|t| t.subresource), Some("exec"));
    }

    #[test]
    fn escapes_are_read_as_what_they_name() {
        let path = decoded_path("/api/v1/namespaces/kube%2Dsystem/p%6Fds/%zz");
        assert_eq!(path, "/api/v1/namespaces/kube-system/pods/%zz");
        let info = RequestInfo::parse(&Method::GET, &path, "", false);
        let target = info.target.unwrap();
        assert_eq!(
            (target.namespace, target.resource, target.name),
            ("kube-system", "pods", "%zz")
        );
        assert!(matches!(decoded_path("/api/v1/pods"), Cow::Borrowed(_)));
    }

    #[test]
    fn only_watches_and_streams_are_long_running() {
        let long = |method: Method, uri: &str| {
            let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
            RequestInfo::parse(&method, path, query, false).is_long_running(query)
        };
        assert!(long(Method::GET, "/api/v1/namespaces/d/pods?watch=1"));
        assert!(long(
            Method::GET,
            "/api/v1/namespaces/d/pods/p/log?follow=true"
        ));
        assert!(!long(Method::GET, "/api/v1/namespaces/d/pods/p/log"));
        assert!(
            !long(Method::GET, "/api/v1/namespaces/d/pods/p?watch=1"),
            "a named get"
        );
        assert!(
            !long(Method::POST, "/api/v1/namespaces/d/pods?watch=1"),
            "a create"
        );
    }

    #[test]
    fn the_first_watch_value_decides_as_kube_apiserver_reads_it() {
        assert!(flag("watch=1", "watch"));
        assert!(flag("watch=True", "watch"));
        assert!(flag("watch=", "watch"));
        assert!(!flag("watch=0&watch=1", "watch"));
        assert!(!flag("watch=FALSE", "watch"));
        assert!(!flag("watcher=1", "watch"));
    }
}
