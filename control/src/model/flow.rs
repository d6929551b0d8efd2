//! `flowControl`: what one client may ask of a route's API server, so a misbehaving
//! controller is held at the gateway before it takes a replica's seats.
//!
//! In `GatewayConfig.spec.defaults.flowControl` for every route; an `ApiServerRoute`'s
//! `spec.flowControl` overrides any field (its `policies` replace the defaults' list).

use serde::Deserialize;

use super::Duration;

/// Flow control of a route.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlowControlSpec {
    /// Ordinary requests (not watches or upgrades) in flight on the route, all clients
    /// together. When reached, requests wait their turn, taken fairly by client. Left
    /// out: no cap. Protects the other clusters on the gateway and the replicas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// Requests that may wait for a slot under `maxInFlight`, all clients together
    /// (default 100; 0: none wait, a request over the cap gets a 429 at once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queued: Option<u32>,
    /// Longest wait for a slot before a 429 (default `5s`, at most `60s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub queue_timeout: Option<Duration>,
    /// Requests never limited, queued or counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exempt: Option<ExemptSpec>,
    /// Limits per client on the requests each policy matches. A request meets the
    /// first policy that matches it, by `order` (lowest first), then by position.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<FlowPolicySpec>,
}

/// Who and what flow control never limits.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExemptSpec {
    /// Groups of verified client certificates (default `[system:masters]`). A token
    /// user's groups are unknown to apigate and never exempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    /// Users of verified client certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Non-resource URLs (exact, or a prefix ending in `*`), default
    /// `[/healthz, /livez, /readyz]`: health probes through apigate.
    #[serde(
        default,
        rename = "nonResourceURLs",
        skip_serializing_if = "Option::is_none"
    )]
    pub non_resource_urls: Option<Vec<String>>,
}

/// One policy: which requests, and each client's limits on them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlowPolicySpec {
    /// Name, in metrics and 429 messages.
    pub name: String,
    /// Lower goes first. Policies that can match the same request must differ in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<u32>,
    /// Which requests; an empty list matches anything.
    #[serde(default, rename = "match")]
    pub matches: FlowMatchSpec,
    /// Requests of one client in flight under this policy (long-running ones are
    /// counted by `maxWatches` instead).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// Sustained requests per second of one client (a token bucket, with `burst`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qps: Option<f64>,
    /// Requests one client may send at once after a quiet spell (default: `qps`
    /// rounded up, at least 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Long-running requests of one client open at once under this policy: watches,
    /// followed logs, `exec`/`attach`/`port-forward` and `proxy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_watches: Option<u32>,
}

/// Which requests a policy matches: every non-empty list must match.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlowMatchSpec {
    /// Clients: a verified certificate's user, `token:<hash>` as the access log names a
    /// bearer token, or `anonymous`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Groups of verified client certificates only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Client addresses (the PROXY address where one is given).
    #[serde(default, rename = "sourceCIDRs", skip_serializing_if = "Vec::is_empty")]
    pub source_cidrs: Vec<String>,
    /// kube-apiserver's verbs: `get`, `list`, `watch`, `create`, `update`, `patch`,
    /// `delete`, `deletecollection`, `proxy`, and `connect` for upgrades.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verbs: Vec<String>,
    /// Resources as `resource` (core group) or `group/resource`; `*` for any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// Namespaces of namespaced requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Non-resource URLs, exact or a prefix ending in `*`.
    #[serde(
        default,
        rename = "nonResourceURLs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
}
