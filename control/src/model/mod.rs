//! The objects users write: `GatewayConfig` and `ApiServerRoute`, and their YAML form.
//!
//! They are Kubernetes-style objects (`apiVersion`, `kind`, `metadata`, `spec`) so that a
//! YAML file and, later, the Kubernetes API produce the same values; everything after
//! parsing is shared between the sources. Specs reject unknown fields: a typo must be an
//! error, not a silently ignored setting.

mod duration;
mod flow;
mod gateway;
mod parse;
mod rollout;
mod route;

pub use duration::Duration;
pub use flow::{ExemptSpec, FlowControlSpec, FlowMatchSpec, FlowPolicySpec};
pub use gateway::{
    AccessDefaults, AccessLogFormat, AccessLogSpec, AdminSpec, Balancing, ConnectSpec,
    ConnectionsSpec, Defaults, EjectionSpec, GatewayConfig, GatewaySpec, HealthSpec, Http2Spec,
    ListenerKind, ListenerSpec, ProxyProtocolMode, SlowStartSpec,
};
pub use parse::{parse_documents, render_documents};
pub use rollout::{CanarySpec, GatesSpec, RolloutSpec};
pub use route::{
    ApiServerRoute, BackendSource, BackendsSpec, RouteMode, RouteSpec, ServingTlsSpec, UpstreamSpec,
};

use serde::Deserialize;

use crate::error::ObjectRef;

/// The API group and version of apigate's own objects.
pub const API_VERSION: &str = "apigate.dev/v1alpha1";

/// `metadata` of an object: only what apigate uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Object name, unique per kind and namespace.
    #[serde(default)]
    pub name: String,
    /// Namespace; empty means `default` for namespaced kinds.
    #[serde(default)]
    pub namespace: String,
    /// Labels are accepted (and ignored) so that manifests can be shared with kubectl.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Annotations are accepted (and ignored) for the same reason.
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// One parsed object of any kind apigate understands.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one GatewayConfig per configuration; the many routes are the small variant"
)]
pub enum Object {
    /// Gateway-wide settings.
    Gateway(GatewayConfig),
    /// One API server behind apigate; shared, so that a source building inputs
    /// often (the Kubernetes source) and compile's route cache hold it without a copy.
    Route(std::sync::Arc<ApiServerRoute>),
}

impl Object {
    /// The reference used in error messages.
    pub fn object_ref(&self) -> ObjectRef {
        match self {
            Object::Gateway(g) => g.object_ref(),
            Object::Route(r) => r.object_ref(),
        }
    }
}
