//! The `ApiServerRoute` custom resource: the file form's spec with cluster references.
//!
//! Backends come from a Service (its EndpointSlices) and TLS material from Secrets, so
//! the route never has to change when replicas move or certificates rotate. Everything
//! else (hostnames, mode, balancing, allowlists, destinations) is the file form's field
//! for field, so an operator moving from a file to the cluster rewrites only references.
//!
//! The CRD YAML in `manifests/crd/` is generated from these types ([`crd_yaml`]); a test
//! fails when the checked-in file drifts from them.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::access::{AccessControlSpec, GardenerAclConfig};
use crate::model::{Balancing, RouteMode};

/// Spec of the `ApiServerRoute` custom resource (`apigate.dev/v1alpha1`).
#[derive(CustomResource, Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "apigate.dev",
    version = "v1alpha1",
    kind = "ApiServerRoute",
    namespaced,
    status = "RouteStatus",
    shortname = "asr",
    category = "apigate",
    printcolumn = r#"{"name":"Hostnames","type":"string","jsonPath":".spec.hostnames"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Backends","type":"string","jsonPath":".status.conditions[?(@.type==\"BackendsReady\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// TLS server names (SNI) that select this route, e.g. `api.shoot.project.example.com`.
    /// A hostname already claimed by an older route in another namespace is refused.
    pub hostnames: Vec<String>,
    /// `terminate` (default): apigate terminates TLS and balances each request;
    /// `passthrough`: apigate splices the TLS stream to one replica per connection.
    #[serde(default)]
    pub mode: RouteMode,
    /// The Service in front of the API server replicas. Only `ready` endpoints of its
    /// EndpointSlices receive new requests.
    pub backend_ref: BackendRef,
    /// Serving certificate and client CA (terminate mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServingTlsRef>,
    /// Upstream trust and front-proxy identity (terminate mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamRef>,
    /// Overrides the gateway's default balancing (terminate mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balancing: Option<Balancing>,
    /// Source-IP allowlist in apigate's form: ordered rules, first match wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_control: Option<AccessControlSpec>,
    /// Source-IP allowlist in Gardener's ACL `providerConfig` form. When unset, the
    /// `providerConfig` of the `acl` Extension in the route's namespace is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<GardenerAclConfig>,
    /// Networks this route always allows (the cluster's own nodes and egress).
    #[serde(
        default,
        rename = "alwaysAllowedCIDRs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub always_allowed_cidrs: Vec<String>,
    /// Extra CONNECT destinations that select this route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<String>,
    /// Active health checks of the replicas: overrides of the gateway's defaults and the
    /// identity the probe presents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthRef>,
    /// Flow control: overrides of the gateway's `defaults.flowControl`, field by field
    /// (`policies` replace the defaults' list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_control: Option<crate::model::FlowControlSpec>,
}

/// Active health checks, as in the file form's `spec.health`, with the probe's token
/// from a Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthRef {
    /// Probe at all (default: the gateway's, `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Time between probes, e.g. `2s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Time a probe may take, e.g. `1s` (shorter than `interval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Passed probes in a row that make an unready replica ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<u32>,
    /// Failed probes in a row that make a replica unready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<u32>,
    /// Path probed (default `/readyz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A Secret key holding the bearer token the probe presents (key default `token`),
    /// e.g. Gardener's health-check token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretKeyRef>,
    /// Probe with the front-proxy certificate as this user instead of a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front_proxy_user: Option<String>,
}

/// Key of the probe token in a Secret when the reference names none.
pub const TOKEN_KEY: &str = "token";

/// A Service port in the route's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendRef {
    /// Service name.
    pub service: String,
    /// The Service's `port` (not the target port): its EndpointSlice port of the same
    /// name is where the replicas listen.
    pub port: i32,
}

/// A key of a Secret in the route's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key inside `data`; default `ca.crt` (for a probe token, `token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl SecretKeyRef {
    /// The key, defaulted to a CA bundle's.
    pub fn key(&self) -> &str {
        self.key_or(CA_KEY)
    }

    /// The key, or `default` when the reference names none.
    pub fn key_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.key.as_deref().unwrap_or(default)
    }
}

/// Key of a CA bundle in a Secret when the reference names none.
pub const CA_KEY: &str = "ca.crt";
/// Certificate chain key of a `kubernetes.io/tls` Secret.
pub const CERT_KEY: &str = "tls.crt";
/// Private key key of a `kubernetes.io/tls` Secret.
pub const KEY_KEY: &str = "tls.key";

/// The API server's serving certificate and the client CA, from Secrets.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServingTlsRef {
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`): presented to clients.
    pub secret_name: String,
    /// CA bundle of client certificates; a verified one becomes the request's identity.
    #[serde(default, rename = "clientCA", skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<SecretKeyRef>,
}

/// How apigate verifies the replicas and proves its own identity to them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamRef {
    /// CA bundle that signs the replicas' serving certificates.
    pub ca: SecretKeyRef,
    /// Name the replicas' certificates must carry (default `kubernetes.default.svc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// A `kubernetes.io/tls` Secret with the front-proxy client certificate
    /// (`--requestheader-client-ca-file` signs it). Required with `tls.clientCA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front_proxy_secret_name: Option<String>,
}

/// `status` of an `ApiServerRoute`, written by the apigate replica holding the Lease.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// The `metadata.generation` these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted` and `BackendsReady`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A status condition in the Kubernetes convention (`metav1.Condition`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Accepted` or `BackendsReady`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable cause in PascalCase, e.g. `HostnameConflict`.
    pub reason: String,
    /// What a human needs to know, e.g. which field is wrong and why.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
    /// The generation this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The CRD as YAML, exactly as checked in under `manifests/crd/`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    render(
        &ApiServerRoute::crd(),
        "control/src/source/kubernetes/crd.rs",
    )
}

/// A CRD as checked in: YAML under a header naming the file it is generated from.
pub(super) fn render<T: Serialize>(crd: &T, source: &str) -> Result<String, serde_yaml::Error> {
    let mut crd =
        serde_json::to_value(crd).map_err(<serde_yaml::Error as serde::ser::Error>::custom)?;
    drop_empty_string_defaults(&mut crd);
    let body = serde_yaml::to_string(&crd)?;
    Ok(format!(
        "# Generated from {source} by `apigate crd`; do not edit.\n{body}"
    ))
}

/// Remove `default: ""` from the schema. Kubernetes 1.20 rejects an empty-string
/// default as null; an empty string is what an absent field deserializes to anyway.
fn drop_empty_string_defaults(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if map.get("default").and_then(|d| d.as_str()) == Some("") {
                map.remove("default");
            }
            map.values_mut().for_each(drop_empty_string_defaults);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_empty_string_defaults),
        _ => {}
    }
}
