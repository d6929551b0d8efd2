//! The JSON a replica answers with: pods, config maps, lists, discovery and `Status`.
//!
//! Objects are shaped like the real core/v1 ones so kubectl and client-go decode them, and
//! each carries a padding annotation of `object_bytes` characters so a load test controls
//! response sizes. Objects are deterministic (name → uid), so a LIST body for a namespace
//! is built once and then served from a small cache: the fake must stay cheap, because on
//! a benchmark machine it shares the CPU with the proxy under test.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use serde_json::{json, Value};

/// Fixed creation time of every fake object.
const CREATED: &str = "2021-01-13T13:20:00Z";
/// Annotation holding the padding.
const PADDING_ANNOTATION: &str = "fake.apigate.dev/padding";
/// At most this many LIST bodies are cached (one per resource and namespace).
const LIST_CACHE_LIMIT: usize = 256;

/// The resources a replica serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Resource {
    Pods,
    ConfigMaps,
}

impl Resource {
    pub(crate) fn parse(segment: &str) -> Option<Resource> {
        match segment {
            "pods" => Some(Resource::Pods),
            "configmaps" => Some(Resource::ConfigMaps),
            _ => None,
        }
    }

    /// Plural name, as in URLs and the `resource` metric label.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Resource::Pods => "pods",
            Resource::ConfigMaps => "configmaps",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Resource::Pods => "Pod",
            Resource::ConfigMaps => "ConfigMap",
        }
    }

    fn item_prefix(self) -> &'static str {
        match self {
            Resource::Pods => "pod",
            Resource::ConfigMaps => "cm",
        }
    }
}

/// Serializes a JSON value; a `Value` always serializes, the fallback is never used.
pub(crate) fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec()))
}

/// A kube `Status` object: the body of every error and of DELETE.
pub(crate) fn status(code: u16, reason: &str, message: &str) -> Bytes {
    let failed = code >= 400;
    let mut v = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": if failed { "Failure" } else { "Success" },
        "message": message,
        "code": code,
    });
    if !reason.is_empty() {
        v["reason"] = json!(reason);
    }
    to_bytes(&v)
}

/// The `Status` a DELETE answers with.
pub(crate) fn deleted(resource: Resource, name: &str) -> Bytes {
    to_bytes(&json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "kind": resource.name()},
    }))
}

/// Deterministic uid for a namespace/name pair (FNV-1a, formatted like a UUID).
fn uid(namespace: &str, name: &str) -> String {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in namespace.bytes().chain([b'/']).chain(name.bytes()) {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    let hex = format!("{h:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Builds objects and caches LIST bodies for one replica.
#[derive(Debug)]
pub(crate) struct Catalog {
    list_size: usize,
    padding: String,
    lists: Mutex<HashMap<(Resource, Option<String>), Bytes>>,
}

impl Catalog {
    pub(crate) fn new(list_size: usize, object_bytes: usize) -> Catalog {
        Catalog {
            list_size,
            padding: "x".repeat(object_bytes),
            lists: Mutex::new(HashMap::new()),
        }
    }

    /// One object. `type_meta` adds `kind`/`apiVersion` (omitted inside lists, like kube).
    pub(crate) fn object(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
        resource_version: u64,
        type_meta: bool,
    ) -> Value {
        let mut v = json!({
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": uid(namespace, name),
                "resourceVersion": resource_version.to_string(),
                "creationTimestamp": CREATED,
                "labels": {"app": "fake"},
                "annotations": {PADDING_ANNOTATION: self.padding},
            },
        });
        match resource {
            Resource::Pods => {
                v["spec"] = json!({
                    "containers": [{"name": "main", "image": "registry.invalid/fake:1"}],
                    "nodeName": "node-0",
                });
                v["status"] = json!({"phase": "Running", "podIP": "10.0.0.1"});
            }
            Resource::ConfigMaps => {
                v["data"] = json!({"key": "value"});
            }
        }
        if type_meta {
            v["kind"] = json!(resource.kind());
            v["apiVersion"] = json!("v1");
        }
        v
    }

    /// A `PodList`/`ConfigMapList` of `list_size` items; across all namespaces (`None`) the
    /// items live in `default`.
    pub(crate) fn list(&self, resource: Resource, namespace: Option<&str>) -> Bytes {
        let key = (resource, namespace.map(str::to_owned));
        let mut cache = self.lists.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(body) = cache.get(&key) {
            return body.clone();
        }
        let ns = namespace.unwrap_or("default");
        let items: Vec<Value> = (0..self.list_size)
            .map(|i| {
                let name = format!("{}-{i}", resource.item_prefix());
                self.object(resource, ns, &name, 1, false)
            })
            .collect();
        let body = to_bytes(&json!({
            "kind": format!("{}List", resource.kind()),
            "apiVersion": "v1",
            "metadata": {"resourceVersion": "1"},
            "items": items,
        }));
        if cache.len() < LIST_CACHE_LIMIT {
            cache.insert(key, body.clone());
        }
        body
    }

    /// Fills in what the server owns in a created/updated object from a client body, or
    /// makes one up when the body is not a JSON object.
    pub(crate) fn accept_write(
        &self,
        resource: Resource,
        namespace: &str,
        name: Option<&str>,
        body: &[u8],
        resource_version: u64,
    ) -> Value {
        match serde_json::from_slice::<Value>(body) {
            Ok(mut v @ Value::Object(_)) => {
                if !v["metadata"].is_object() {
                    v["metadata"] = json!({});
                }
                let given = v["metadata"]["name"].as_str().map(str::to_owned);
                let name = name
                    .map(str::to_owned)
                    .or(given)
                    .unwrap_or_else(|| format!("{}-{resource_version}", resource.item_prefix()));
                v["metadata"]["uid"] = json!(uid(namespace, &name));
                v["metadata"]["name"] = json!(name);
                v["metadata"]["namespace"] = json!(namespace);
                v["metadata"]["resourceVersion"] = json!(resource_version.to_string());
                v["kind"] = json!(resource.kind());
                v["apiVersion"] = json!("v1");
                v
            }
            _ => {
                let name = name
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{}-{resource_version}", resource.item_prefix()));
                self.object(resource, namespace, &name, resource_version, true)
            }
        }
    }
}

/// `/version`, as kube-apiserver 1.20.2 reports it.
pub(crate) fn version() -> Bytes {
    to_bytes(&json!({
        "major": "1",
        "minor": "20",
        "gitVersion": "v1.20.2-fake",
        "gitCommit": "faecb196815e248d3ecfb03c680a4507229c2a56",
        "gitTreeState": "clean",
        "buildDate": CREATED,
        "goVersion": "go1.15.5",
        "compiler": "gc",
        "platform": "linux/amd64",
    }))
}

/// `/api`: the core group's versions.
pub(crate) fn api_versions(server_address: &str) -> Bytes {
    to_bytes(&json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }))
}

/// `/apis`: no named groups.
pub(crate) fn api_group_list() -> Bytes {
    to_bytes(&json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}))
}

/// `/api/v1`: what kubectl's discovery needs to find pods, their subresources and config maps.
pub(crate) fn core_resources() -> Bytes {
    let rw = [
        "create", "delete", "get", "list", "patch", "update", "watch",
    ];
    let sub = |name: &str, kind: &str| json!({"name": name, "singularName": "", "namespaced": true, "kind": kind, "verbs": ["create", "get"]});
    to_bytes(&json!({
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {"name": "configmaps", "singularName": "", "namespaced": true, "kind": "ConfigMap", "verbs": rw, "shortNames": ["cm"]},
            {"name": "pods", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": rw, "shortNames": ["po"], "categories": ["all"]},
            sub("pods/attach", "PodAttachOptions"),
            sub("pods/exec", "PodExecOptions"),
            sub("pods/portforward", "PodPortForwardOptions"),
        ],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_has_padded_items() {
        let c = Catalog::new(3, 100);
        let body = c.list(Resource::Pods, Some("ns1"));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["kind"], "PodList");
        let items = v["items"].as_array().unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[2]["metadata"]["name"], "pod-2");
        assert_eq!(items[0]["metadata"]["namespace"], "ns1");
        let pad = items[0]["metadata"]["annotations"][PADDING_ANNOTATION]
            .as_str()
            .unwrap();
        assert_eq!(pad.len(), 100);
        // Served from the cache the second time.
        assert_eq!(c.list(Resource::Pods, Some("ns1")), body);
    }

    #[test]
    fn writes_echo_and_fill_metadata() {
        let c = Catalog::new(1, 0);
        let v = c.accept_write(
            Resource::Pods,
            "ns",
            None,
            br#"{"metadata":{"name":"p"},"spec":{"x":1}}"#,
            7,
        );
        assert_eq!(v["metadata"]["name"], "p");
        assert_eq!(v["metadata"]["resourceVersion"], "7");
        assert_eq!(v["spec"]["x"], 1);
        let gen = c.accept_write(Resource::ConfigMaps, "ns", None, b"not json", 8);
        assert_eq!(gen["kind"], "ConfigMap");
        assert_eq!(gen["metadata"]["name"], "cm-8");
    }

    #[test]
    fn status_shape() {
        let v: Value = serde_json::from_slice(&status(404, "NotFound", "nope")).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NotFound");
        assert_eq!(v["code"], 404);
    }
}
