//! Requests by verb and resource, shaped like kube-apiserver's `apiserver_request_total`
//! and `apiserver_request_duration_seconds`, so existing dashboards and alerts map over.
//!
//! The label set is bounded whatever clients send: verbs are kube-apiserver's reported
//! verbs, groups and resources are the built-in ones (anything else is `other`), and
//! subresources a known list. The series carry no route label: they describe the fleet's
//! API traffic, and the per-route series ([`super::Metrics::requests`]) describe routes.
//! Handles are resolved once per label combination and kept, so a request costs one map
//! lookup by the labels' addresses, not a hash of label strings.

use std::collections::HashMap;
use std::sync::RwLock;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

use crate::http::request_info::{NonResourceMethod, RequestInfo, Verb};

/// Built-in API groups and their resources (Kubernetes 1.34, plus `metrics.k8s.io`).
static RESOURCES: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "bindings",
            "componentstatuses",
            "configmaps",
            "endpoints",
            "events",
            "limitranges",
            "namespaces",
            "nodes",
            "persistentvolumeclaims",
            "persistentvolumes",
            "pods",
            "podtemplates",
            "replicationcontrollers",
            "resourcequotas",
            "secrets",
            "serviceaccounts",
            "services",
        ],
    ),
    (
        "admissionregistration.k8s.io",
        &[
            "mutatingadmissionpolicies",
            "mutatingadmissionpolicybindings",
            "mutatingwebhookconfigurations",
            "validatingadmissionpolicies",
            "validatingadmissionpolicybindings",
            "validatingwebhookconfigurations",
        ],
    ),
    ("apiextensions.k8s.io", &["customresourcedefinitions"]),
    ("apiregistration.k8s.io", &["apiservices"]),
    (
        "apps",
        &[
            "controllerrevisions",
            "daemonsets",
            "deployments",
            "replicasets",
            "statefulsets",
        ],
    ),
    (
        "authentication.k8s.io",
        &["selfsubjectreviews", "tokenreviews"],
    ),
    (
        "authorization.k8s.io",
        &[
            "localsubjectaccessreviews",
            "selfsubjectaccessreviews",
            "selfsubjectrulesreviews",
            "subjectaccessreviews",
        ],
    ),
    ("autoscaling", &["horizontalpodautoscalers"]),
    ("batch", &["cronjobs", "jobs"]),
    (
        "certificates.k8s.io",
        &["certificatesigningrequests", "clustertrustbundles"],
    ),
    ("coordination.k8s.io", &["leasecandidates", "leases"]),
    ("discovery.k8s.io", &["endpointslices"]),
    ("events.k8s.io", &["events"]),
    (
        "flowcontrol.apiserver.k8s.io",
        &["flowschemas", "prioritylevelconfigurations"],
    ),
    ("internal.apiserver.k8s.io", &["storageversions"]),
    ("metrics.k8s.io", &["nodes", "pods"]),
    (
        "networking.k8s.io",
        &[
            "ingressclasses",
            "ingresses",
            "ipaddresses",
            "networkpolicies",
            "servicecidrs",
        ],
    ),
    ("node.k8s.io", &["runtimeclasses"]),
    ("policy", &["poddisruptionbudgets"]),
    (
        "rbac.authorization.k8s.io",
        &[
            "clusterrolebindings",
            "clusterroles",
            "rolebindings",
            "roles",
        ],
    ),
    (
        "resource.k8s.io",
        &[
            "deviceclasses",
            "resourceclaims",
            "resourceclaimtemplates",
            "resourceslices",
        ],
    ),
    ("scheduling.k8s.io", &["priorityclasses"]),
    (
        "storage.k8s.io",
        &[
            "csidrivers",
            "csinodes",
            "csistoragecapacities",
            "storageclasses",
            "volumeattachments",
            "volumeattributesclasses",
        ],
    ),
    ("storagemigration.k8s.io", &["storageversionmigrations"]),
];

/// Subresources of built-in resources.
static SUBRESOURCES: &[&str] = &[
    "approval",
    "attach",
    "binding",
    "ephemeralcontainers",
    "eviction",
    "exec",
    "finalize",
    "log",
    "portforward",
    "proxy",
    "resize",
    "scale",
    "status",
    "token",
];

/// The label of anything outside the known sets.
const OTHER: &str = "other";

/// `Content-Type` of a server-side apply (reported as verb `APPLY`).
const APPLY_PATCH: &str = "application/apply-patch+yaml";

/// A request's labels, all from bounded sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLabels {
    /// kube-apiserver's reported verb: `GET`, `LIST`, `WATCH`, `POST`, `PUT`, `PATCH`,
    /// `APPLY`, `DELETE`, `CONNECT`, `PROXY`, or the method of a non-resource request.
    pub verb: &'static str,
    /// A built-in API group, `other`, or `""` for non-resource requests.
    pub group: &'static str,
    /// A built-in resource of that group, `other`, or `""`.
    pub resource: &'static str,
    /// A known subresource, `other`, or `""`.
    pub subresource: &'static str,
    /// `resource`, `namespace`, `cluster`, or `""` for non-resource requests.
    pub scope: &'static str,
}

impl ApiLabels {
    /// The labels of a request. `content_type` tells a server-side apply from a patch.
    pub fn of(info: &RequestInfo<'_>, content_type: Option<&[u8]>) -> Self {
        let verb = match info.verb {
            Verb::Get => "GET",
            Verb::List => "LIST",
            Verb::Watch => "WATCH",
            Verb::Create => "POST",
            Verb::Update => "PUT",
            Verb::Patch if content_type == Some(APPLY_PATCH.as_bytes()) => "APPLY",
            Verb::Patch => "PATCH",
            Verb::Delete | Verb::DeleteCollection => "DELETE",
            Verb::Proxy => "PROXY",
            Verb::Connect => "CONNECT",
            Verb::Unknown => OTHER,
            Verb::NonResource(method) => non_resource_verb(method),
        };
        let Some(target) = &info.target else {
            return ApiLabels {
                verb,
                group: "",
                resource: "",
                subresource: "",
                scope: "",
            };
        };
        let (group, resource) = match RESOURCES.iter().find(|(g, _)| *g == target.group) {
            Some((group, resources)) => (
                *group,
                resources
                    .iter()
                    .find(|r| **r == target.resource)
                    .copied()
                    .unwrap_or(OTHER),
            ),
            None => (OTHER, OTHER),
        };
        let subresource = match target.subresource {
            "" => "",
            s => SUBRESOURCES
                .iter()
                .find(|known| **known == s)
                .copied()
                .unwrap_or(OTHER),
        };
        // kube-apiserver's `CleanScope`.
        let scope = if !target.name.is_empty() || info.verb == Verb::Create {
            "resource"
        } else if !target.namespace.is_empty() {
            "namespace"
        } else {
            "cluster"
        };
        ApiLabels {
            verb,
            group,
            resource,
            subresource,
            scope,
        }
    }
}

/// The verb label of a non-resource request: its method, from kube-apiserver's set.
fn non_resource_verb(method: NonResourceMethod) -> &'static str {
    match method {
        NonResourceMethod::Get => "GET",
        NonResourceMethod::Head => "HEAD",
        NonResourceMethod::Post => "POST",
        NonResourceMethod::Put => "PUT",
        NonResourceMethod::Patch => "PATCH",
        NonResourceMethod::Delete => "DELETE",
        NonResourceMethod::Options => "OPTIONS",
        NonResourceMethod::Other => OTHER,
    }
}

/// A label combination as a map key: each label's address and length (each is one of a
/// few static strings; two keys are equal only for equal labels, an empty string whose
/// address another label shares included) and the status code's.
type Key = [(usize, usize); 6];

fn key(labels: &ApiLabels, code: &'static str) -> Key {
    let at = |s: &str| (s.as_ptr() as usize, s.len());
    [
        at(labels.verb),
        at(labels.group),
        at(labels.resource),
        at(labels.subresource),
        at(labels.scope),
        at(code),
    ]
}

/// The per-verb series and their resolved handles.
pub struct ApiRequests {
    total: IntCounterVec,
    duration: HistogramVec,
    handles: RwLock<HashMap<Key, (IntCounter, Histogram)>>,
}

impl ApiRequests {
    /// The two families; the caller registers them ([`Self::collectors`]).
    pub(super) fn new() -> Self {
        let labels = ["verb", "group", "resource", "subresource", "scope"];
        let total = IntCounterVec::new(
            Opts::new(
                "apigate_apiserver_request_total",
                "Requests by kube-apiserver's verb, API group, resource, subresource, scope and status code (like apiserver_request_total).",
            ),
            &["verb", "group", "resource", "subresource", "scope", "code"],
        )
        .unwrap_or_else(|e| panic!("counter is malformed: {e}"));
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "apigate_apiserver_request_duration_seconds",
                "Time from request headers to the end of the response by verb, API group, resource, subresource and scope; watches and upgrades excluded (like apiserver_request_duration_seconds).",
            )
            .buckets(vec![
                0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0,
                6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
            ]),
            &labels,
        )
        .unwrap_or_else(|e| panic!("histogram is malformed: {e}"));
        ApiRequests {
            total,
            duration,
            handles: RwLock::default(),
        }
    }

    /// The families to register.
    pub(super) fn collectors(&self) -> [Box<dyn prometheus::core::Collector>; 2] {
        [
            Box::new(self.total.clone()),
            Box::new(self.duration.clone()),
        ]
    }

    /// Count a finished request; `seconds` is observed for ordinary requests only
    /// (`None` for watches and upgrades, whose duration is the client's choice).
    pub fn observe(&self, labels: &ApiLabels, code: &'static str, seconds: Option<f64>) {
        let key = key(labels, code);
        let cached = self
            .handles
            .read()
            .ok()
            .and_then(|handles| handles.get(&key).cloned());
        let (total, duration) = match cached {
            Some(handles) => handles,
            None => self.resolve(key, labels, code),
        };
        total.inc();
        if let Some(seconds) = seconds {
            duration.observe(seconds);
        }
    }

    /// Resolve (and keep) the handles of a label combination seen the first time.
    #[cold]
    fn resolve(&self, key: Key, labels: &ApiLabels, code: &'static str) -> (IntCounter, Histogram) {
        let values = [
            labels.verb,
            labels.group,
            labels.resource,
            labels.subresource,
            labels.scope,
        ];
        let total = self
            .total
            .with_label_values(&[values[0], values[1], values[2], values[3], values[4], code]);
        let duration = self.duration.with_label_values(&values);
        if let Ok(mut handles) = self.handles.write() {
            handles.insert(key, (total.clone(), duration.clone()));
        }
        (total, duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn labels(method: Method, uri: &str, content_type: Option<&str>) -> ApiLabels {
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        let info = RequestInfo::parse(&method, path, query, false);
        ApiLabels::of(&info, content_type.map(str::as_bytes))
    }

    fn tuple(l: ApiLabels) -> [&'static str; 5] {
        [l.verb, l.group, l.resource, l.subresource, l.scope]
    }

    #[test]
    fn labels_follow_kube_apiserver_and_stay_bounded() {
        let cases = [
            (
                Method::GET,
                "/api/v1/pods",
                None,
                ["LIST", "", "pods", "", "cluster"],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/d/pods?watch=1",
                None,
                ["WATCH", "", "pods", "", "namespace"],
            ),
            (
                Method::POST,
                "/api/v1/namespaces/d/pods",
                None,
                ["POST", "", "pods", "", "resource"],
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/d/deployments/web",
                Some(APPLY_PATCH),
                ["APPLY", "apps", "deployments", "", "resource"],
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/d/deployments/web/scale",
                Some("application/merge-patch+json"),
                ["PATCH", "apps", "deployments", "scale", "resource"],
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/d/pods",
                None,
                ["DELETE", "", "pods", "", "namespace"],
            ),
            // A custom resource and a made-up one: bounded.
            (
                Method::GET,
                "/apis/example.com/v1/widgets",
                None,
                ["LIST", "other", "other", "", "cluster"],
            ),
            (
                Method::GET,
                "/api/v1/namespaces/d/pods/p/x9f3",
                None,
                ["GET", "", "pods", "other", "resource"],
            ),
            (Method::GET, "/healthz", None, ["GET", "", "", "", ""]),
            (
                Method::from_bytes(b"BREW").unwrap(),
                "/version",
                None,
                ["other", "", "", "", ""],
            ),
        ];
        for (method, uri, content_type, want) in cases {
            assert_eq!(
                tuple(labels(method.clone(), uri, content_type)),
                want,
                "{method} {uri}"
            );
        }
    }

    #[test]
    fn one_series_per_label_combination() {
        let api = ApiRequests::new();
        let list = labels(Method::GET, "/api/v1/pods", None);
        api.observe(&list, "200", Some(0.01));
        api.observe(&list, "200", Some(0.02));
        api.observe(&list, "429", Some(0.001));
        let watch = labels(Method::GET, "/api/v1/pods?watch=1", None);
        api.observe(&watch, "200", None);
        let ok = api
            .total
            .with_label_values(&["LIST", "", "pods", "", "cluster", "200"]);
        assert_eq!(ok.get(), 2);
        let list_duration = api
            .duration
            .with_label_values(&["LIST", "", "pods", "", "cluster"]);
        assert_eq!(list_duration.get_sample_count(), 3);
        let watch_duration = api
            .duration
            .with_label_values(&["WATCH", "", "pods", "", "cluster"]);
        assert_eq!(
            watch_duration.get_sample_count(),
            0,
            "watches are not timed"
        );
    }
}
