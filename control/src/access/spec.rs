//! The two ways a user writes a source-IP allowlist, as serde types.
//!
//! * [`GardenerAclConfig`]: the StackIT ACL extension's `providerConfig`, accepted exactly as
//!   a Shoot carries it, so operators can paste it without translation.
//! * [`AccessControlSpec`]: apigate's own form, which lifts the extension's limits (several
//!   ordered rules, DENY rules, a chosen default).
//!
//! Both hold strings, not parsed values: parsing happens in [`super::compile_policy`] so that
//! every bad entry is reported with its field path instead of failing the whole document at
//! the first one. Unknown fields are rejected so a typo never silently widens access.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Errors, ObjectRef, Problem};

/// apigate's own allowlist (`spec.accessControl` of an `ApiServerRoute`): rules are tried
/// in order and the first whose CIDRs contain the client address decides; when none
/// matches, `defaultAction` decides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessControlSpec {
    /// Ordered rules, first match wins. May be empty: then only the always-allowed
    /// networks and `defaultAction` apply.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// `allow` or `deny` (case-insensitive) for addresses no rule matches; default `deny`,
    /// because an allowlist that silently admits everything else would be no allowlist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_action: Option<String>,
}

/// Gardener's ACL extension `providerConfig` (`spec.acl` of an `ApiServerRoute`), pasted
/// verbatim from the Shoot's `extensions[type=acl].providerConfig`.
///
/// Exactly one rule: `ALLOW` admits its CIDRs and denies everything else, `DENY` denies
/// its CIDRs and admits everything else.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GardenerAclConfig {
    /// The single rule.
    pub rule: RuleSpec,
    /// Accepted and ignored: a `providerConfig` may carry one, and rejecting it would
    /// break the copy-and-paste promise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Accepted and ignored, like `apiVersion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl GardenerAclConfig {
    /// A config holding just `rule`, as most Shoots write it.
    pub fn new(rule: RuleSpec) -> Self {
        GardenerAclConfig {
            rule,
            api_version: None,
            kind: None,
        }
    }
}

/// One rule, shared by both spellings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSpec {
    /// `allow` or `deny`, case-insensitive (Gardener writes `ALLOW`/`DENY`).
    #[serde(default)]
    pub action: String,
    /// Which client address the CIDRs are matched against: `remote_ip` (default; the
    /// address the PROXY protocol carried, else the TCP peer), `direct_remote_ip` (the TCP
    /// peer) or `source_ip` (same as `remote_ip`). Case-insensitive.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub address_type: Option<String>,
    /// Networks in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`); host bits must be zero.
    #[serde(default)]
    pub cidrs: Vec<String>,
}

/// Parse a Gardener `providerConfig` that arrived as raw JSON (e.g. from an `Extension`
/// object), reporting schema problems as [`Problem::Syntax`] at the exact sub-field.
///
/// Only the shape is checked here; values are validated by [`super::compile_policy`].
pub fn parse_gardener_acl(
    value: serde_json::Value,
    object: &ObjectRef,
    field: &str,
    errors: &mut Errors,
) -> Option<GardenerAclConfig> {
    match serde_path_to_error::deserialize::<_, GardenerAclConfig>(value) {
        Ok(config) => Some(config),
        Err(err) => {
            let path = err.path().to_string();
            let field = if path == "." || path.is_empty() {
                field.to_string()
            } else {
                format!("{field}.{path}")
            };
            errors.push(object, field, Problem::Syntax(err.into_inner().to_string()));
            None
        }
    }
}
