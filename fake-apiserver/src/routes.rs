//! Which endpoint a request is for, decided from method, path and query alone.
//!
//! Keeping this a pure function over strings makes the URL space of the fake testable
//! without sockets and keeps the handler a plain `match`.

use std::time::Duration;

use http::Method;

use crate::objects::Resource;

/// The health endpoints (never delayed, never counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    Ready,
    Live,
    Health,
}

/// The streaming subresources of a pod, reached through an HTTP/1.1 upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Connect {
    Exec,
    Attach,
    PortForward,
}

impl Connect {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Connect::Exec => "exec",
            Connect::Attach => "attach",
            Connect::PortForward => "portforward",
        }
    }
}

/// One endpoint of the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Health(Probe),
    Metrics,
    Version,
    ApiVersions,
    ApiGroupList,
    CoreResources,
    /// A collection; `namespace: None` is the cluster-wide list. `watch_path` is set for
    /// the legacy `/api/v1/watch/...` form.
    Collection {
        resource: Resource,
        namespace: Option<String>,
        watch_path: bool,
    },
    Object {
        resource: Resource,
        namespace: String,
        name: String,
    },
    Connect {
        namespace: String,
        name: String,
        connect: Connect,
    },
    NotFound,
}

impl Route {
    /// Parses a request path.
    pub(crate) fn classify(path: &str) -> Route {
        for (prefix, probe) in [
            ("/readyz", Probe::Ready),
            ("/livez", Probe::Live),
            ("/healthz", Probe::Health),
        ] {
            if let Some(rest) = path.strip_prefix(prefix) {
                if rest.is_empty() || rest.starts_with('/') {
                    return Route::Health(probe);
                }
            }
        }
        let trimmed = path.trim_end_matches('/');
        let segments: Vec<&str> = trimmed.split('/').skip(1).collect();
        let owned = |s: &str| s.to_owned();
        match segments.as_slice() {
            ["metrics"] => Route::Metrics,
            ["version"] => Route::Version,
            ["api"] => Route::ApiVersions,
            ["apis"] => Route::ApiGroupList,
            ["api", "v1"] => Route::CoreResources,
            ["api", "v1", rest @ ..] => Self::core(rest, owned),
            _ => Route::NotFound,
        }
    }

    fn core(rest: &[&str], owned: impl Fn(&str) -> String) -> Route {
        let (watch_path, rest) = match rest {
            ["watch", rest @ ..] => (true, rest),
            _ => (false, rest),
        };
        let collection = |resource: &str, namespace: Option<&str>| {
            Resource::parse(resource).map_or(Route::NotFound, |resource| Route::Collection {
                resource,
                namespace: namespace.map(&owned),
                watch_path,
            })
        };
        match rest {
            [resource] => collection(resource, None),
            ["namespaces", ns, resource] if !ns.is_empty() => collection(resource, Some(ns)),
            ["namespaces", ns, resource, name]
                if !watch_path && !ns.is_empty() && !name.is_empty() =>
            {
                Resource::parse(resource).map_or(Route::NotFound, |resource| Route::Object {
                    resource,
                    namespace: owned(ns),
                    name: owned(name),
                })
            }
            ["namespaces", ns, "pods", name, sub] if !watch_path => {
                let connect = match *sub {
                    "exec" => Connect::Exec,
                    "attach" => Connect::Attach,
                    "portforward" => Connect::PortForward,
                    _ => return Route::NotFound,
                };
                Route::Connect {
                    namespace: owned(ns),
                    name: owned(name),
                    connect,
                }
            }
            _ => Route::NotFound,
        }
    }

    /// The kube `verb` of a request to this route (`LIST`, `WATCH`, `GET`, `POST`, ...).
    pub(crate) fn verb(&self, method: &Method, query: &Query) -> &'static str {
        match self {
            Route::Collection { watch_path, .. } if *method == Method::GET => {
                if *watch_path || query.watch {
                    "WATCH"
                } else {
                    "LIST"
                }
            }
            Route::Connect { .. } => "CONNECT",
            _ => method_name(method),
        }
    }

    /// Labels `resource`, `subresource` and `scope` of `apiserver_request_total`.
    pub(crate) fn metric_target(&self) -> (&'static str, &'static str, &'static str) {
        match self {
            Route::Collection {
                resource,
                namespace,
                ..
            } => (
                resource.name(),
                "",
                if namespace.is_some() {
                    "namespace"
                } else {
                    "cluster"
                },
            ),
            Route::Object { resource, .. } => (resource.name(), "", "resource"),
            Route::Connect { connect, .. } => ("pods", connect.name(), "resource"),
            _ => ("", "", ""),
        }
    }
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

/// The query parameters the fake understands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Query {
    /// `watch=true` / `watch=1`.
    pub(crate) watch: bool,
    /// `timeoutSeconds=N`: how long a watch stays open.
    pub(crate) timeout: Option<Duration>,
}

impl Query {
    /// Parses a raw query string; unknown or malformed parameters are ignored, like kube
    /// ignores parameters it does not know.
    pub(crate) fn parse(query: Option<&str>) -> Query {
        let mut q = Query::default();
        for pair in query.unwrap_or_default().split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "watch" => q.watch = matches!(value, "true" | "1" | "True" | "TRUE"),
                "timeoutSeconds" => {
                    q.timeout = value.parse::<u64>().ok().map(Duration::from_secs);
                }
                _ => {}
            }
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coll(resource: Resource, ns: Option<&str>, watch_path: bool) -> Route {
        Route::Collection {
            resource,
            namespace: ns.map(str::to_owned),
            watch_path,
        }
    }

    #[test]
    fn classifies_paths() {
        let cases = [
            ("/readyz", Route::Health(Probe::Ready)),
            ("/readyz/etcd", Route::Health(Probe::Ready)),
            ("/readyzz", Route::NotFound),
            ("/livez", Route::Health(Probe::Live)),
            ("/healthz", Route::Health(Probe::Health)),
            ("/metrics", Route::Metrics),
            ("/version", Route::Version),
            ("/api", Route::ApiVersions),
            ("/api/", Route::ApiVersions),
            ("/apis", Route::ApiGroupList),
            ("/api/v1", Route::CoreResources),
            ("/api/v1/pods", coll(Resource::Pods, None, false)),
            ("/api/v1/watch/pods", coll(Resource::Pods, None, true)),
            (
                "/api/v1/namespaces/ns/configmaps",
                coll(Resource::ConfigMaps, Some("ns"), false),
            ),
            (
                "/api/v1/watch/namespaces/ns/pods",
                coll(Resource::Pods, Some("ns"), true),
            ),
            (
                "/api/v1/namespaces/ns/pods/p",
                Route::Object {
                    resource: Resource::Pods,
                    namespace: "ns".into(),
                    name: "p".into(),
                },
            ),
            (
                "/api/v1/namespaces/ns/pods/p/exec",
                Route::Connect {
                    namespace: "ns".into(),
                    name: "p".into(),
                    connect: Connect::Exec,
                },
            ),
            ("/api/v1/namespaces/ns/pods/p/log", Route::NotFound),
            ("/api/v1/secrets", Route::NotFound),
            ("/apis/apps/v1", Route::NotFound),
            ("/", Route::NotFound),
        ];
        for (path, want) in cases {
            assert_eq!(Route::classify(path), want, "{path}");
        }
    }

    #[test]
    fn verbs_follow_kube() {
        let list = Route::classify("/api/v1/namespaces/a/pods");
        let obj = Route::classify("/api/v1/namespaces/a/pods/b");
        let none = Query::default();
        let watch = Query::parse(Some("watch=1&timeoutSeconds=30"));
        assert_eq!(watch.timeout, Some(Duration::from_secs(30)));
        assert_eq!(list.verb(&Method::GET, &none), "LIST");
        assert_eq!(list.verb(&Method::GET, &watch), "WATCH");
        assert_eq!(list.verb(&Method::POST, &none), "POST");
        assert_eq!(obj.verb(&Method::GET, &none), "GET");
        assert_eq!(obj.verb(&Method::PATCH, &none), "PATCH");
        assert!(Query::parse(Some("watch=true")).watch);
        assert!(!Query::parse(Some("watch=false")).watch);
    }
}
