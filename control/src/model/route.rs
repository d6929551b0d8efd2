//! `ApiServerRoute`: one API server behind apigate.

use serde::Deserialize;

use super::{Balancing, HealthSpec, ObjectMeta};
use crate::access::{AccessControlSpec, GardenerAclConfig};
use crate::error::ObjectRef;

/// One API server (e.g. one Gardener shoot's kube-apiserver) and how to reach it.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiServerRoute {
    /// Always `apigate.dev/v1alpha1`.
    pub api_version: String,
    /// Always `ApiServerRoute`.
    pub kind: String,
    /// Name and namespace.
    pub metadata: ObjectMeta,
    /// The route.
    pub spec: RouteSpec,
}

impl ApiServerRoute {
    /// Its namespace; an empty one means `default`.
    pub fn namespace(&self) -> &str {
        if self.metadata.namespace.is_empty() {
            "default"
        } else {
            &self.metadata.namespace
        }
    }

    /// The reference used in error messages.
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef::Named {
            kind: "ApiServerRoute".into(),
            namespace: self.metadata.namespace.clone(),
            name: self.metadata.name.clone(),
        }
    }
}

/// The body of an `ApiServerRoute`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// TLS server names (SNI) that select this route, e.g. `api.shoot.project.example.com`.
    pub hostnames: Vec<String>,
    /// `terminate` (default): apigate terminates TLS and balances each request;
    /// `passthrough`: apigate splices the TLS stream to one replica per connection.
    #[serde(default)]
    pub mode: RouteMode,
    /// Where the API server replicas are.
    pub backends: BackendsSpec,
    /// The API server's serving certificate, presented to clients (terminate mode).
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServingTlsSpec>,
    /// How apigate talks to the replicas (terminate mode).
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamSpec>,
    /// Overrides `GatewayConfig.spec.defaults.balancing` (terminate mode).
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balancing: Option<Balancing>,
    /// Source-IP allowlist in apigate's form: ordered rules, first match wins.
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_control: Option<AccessControlSpec>,
    /// Source-IP allowlist as Gardener's ACL extension `providerConfig`, pasted verbatim.
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acl: Option<GardenerAclConfig>,
    /// Networks this route always allows (the cluster's own node network and egress
    /// addresses), so the cluster can always reach its own API server.
    #[serde(default, rename = "alwaysAllowedCIDRs", alias = "alwaysAllowedCidrs")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub always_allowed_cidrs: Vec<String>,
    /// Extra CONNECT destinations (values of the destination header) that select this
    /// route, besides `outbound|443||kube-apiserver.<namespace>.svc.cluster.local`.
    #[serde(default)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<String>,
    /// Active health checks: overrides of the gateway's `defaults.health`, and the
    /// identity the probe presents (`tokenFile` or `frontProxyUser`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSpec>,
    /// Flow control: overrides of the gateway's `defaults.flowControl`, field by field
    /// (`policies` replace the defaults' list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_control: Option<super::FlowControlSpec>,
}

/// How a route handles its connections.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum RouteMode {
    /// Terminate TLS and balance every request and HTTP/2 stream.
    #[default]
    Terminate,
    /// Pass the TLS stream through to one replica per connection (least connections),
    /// so the client's certificate reaches kube-apiserver directly: the L4 status quo,
    /// for API servers that opt out of termination.
    Passthrough,
}

/// Backend replicas of a route.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendsSpec {
    /// Fixed `ip:port` list (the file source's form; the Kubernetes source fills it
    /// from EndpointSlices).
    #[serde(rename = "static")]
    pub static_addresses: Vec<String>,
    /// Where the list comes from, which decides what an empty list means. Never
    /// written in a file: the Kubernetes source sets it.
    #[serde(skip)]
    pub source: BackendSource,
}

/// Where a route's replica list comes from.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum BackendSource {
    /// Written in the configuration: an empty list is a mistake, and compile says so.
    #[default]
    Static,
    /// A Service's EndpointSlices (the Kubernetes source): an empty list is a real
    /// state (every replica gone or not ready; requests get 503 until one is back).
    Discovered {
        /// Endpoints that are terminating. They get no new requests; what they serve
        /// finishes, and they stay visible as draining.
        draining: Vec<String>,
    },
}

impl BackendsSpec {
    /// The terminating endpoints of a discovered list; none for a static one.
    pub fn draining(&self) -> &[String] {
        match &self.source {
            BackendSource::Static => &[],
            BackendSource::Discovered { draining } => draining,
        }
    }
}

/// Serving certificate and client authentication.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServingTlsSpec {
    /// PEM certificate chain, leaf first (the API server's own serving certificate).
    pub cert_file: String,
    /// PEM private key of the leaf.
    pub key_file: String,
    /// PEM bundle of the cluster's client CA. When set, clients may present a
    /// certificate; a verified one becomes the request's identity.
    #[serde(default, rename = "clientCAFile")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<String>,
}

/// The upstream side: verifying the replicas and proving apigate's own identity.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamSpec {
    /// PEM bundle that signs the replicas' serving certificates. Always verified.
    #[serde(rename = "caFile")]
    pub ca_file: String,
    /// Name the replicas' certificates must carry (default `kubernetes.default.svc`).
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Front-proxy client certificate (kube-apiserver `--requestheader-client-ca-file`
    /// signs it; its CN is in `--requestheader-allowed-names`). Required with a client CA.
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub front_proxy_cert_file: Option<String>,
    /// Key of the front-proxy client certificate.
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub front_proxy_key_file: Option<String>,
}
