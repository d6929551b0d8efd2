//! Spec → [`AccessPolicy`]: validate a route's allowlist (either spelling) and build its
//! tries. Pure; every problem is pushed with its field path so one run reports them all.

use ipnet::IpNet;

use super::cidr::compile_cidrs;
use super::policy::{AccessPolicy, Action, AddressType, Rule};
use super::spec::{AccessControlSpec, GardenerAclConfig, RuleSpec};
use super::CidrSet;
use crate::error::{Errors, ObjectRef, Problem};

/// Field of apigate's own spelling in an `ApiServerRoute`.
const OWN_FIELD: &str = "spec.accessControl";
/// Field of Gardener's spelling in an `ApiServerRoute`.
const GARDENER_FIELD: &str = "spec.acl";
/// Field of the route's always-allowed networks.
const ROUTE_ALWAYS_FIELD: &str = "spec.alwaysAllowedCIDRs";

const TYPES: &str = "expected remote_ip (the address the PROXY protocol carried, else the TCP peer), direct_remote_ip (the TCP peer) or source_ip (same as remote_ip), case-insensitive";

/// Compile a route's policy from whichever spelling is given. Both given is an error at
/// `spec.acl` (after validating both, so every other problem is reported too). Neither
/// given yields [`AccessPolicy::allow_all`]; the route's always-allowed CIDRs are still
/// validated then. `always_allowed` are the gateway-wide networks, already parsed.
/// `max_cidrs` bounds the CIDRs over all rules of the route.
///
/// Returns `None` iff errors were pushed.
pub fn compile_policy(
    own: Option<&AccessControlSpec>,
    gardener: Option<&GardenerAclConfig>,
    always_allowed: &[IpNet],
    route_always_allowed: &[String],
    max_cidrs: usize,
    object: &ObjectRef,
    errors: &mut Errors,
) -> Option<AccessPolicy> {
    let before = errors.len();
    let route_always = compile_cidrs(route_always_allowed, object, ROUTE_ALWAYS_FIELD, errors);
    let own = own.map(|spec| compile_own(spec, max_cidrs, object, errors));
    let gardener = gardener.map(|config| compile_gardener(config, max_cidrs, object, errors));
    if own.is_some() && gardener.is_some() {
        errors.push(
            object,
            GARDENER_FIELD,
            Problem::Invalid {
                value: "set together with spec.accessControl".into(),
                reason: "a route takes one allowlist: either accessControl (apigate's ordered rules) or acl (Gardener's providerConfig); merge the rules into one of them".into(),
            },
        );
    }
    if errors.len() != before {
        return None;
    }
    let Some((rules, default)) = own.or(gardener).flatten() else {
        return Some(AccessPolicy::allow_all());
    };
    let always = CidrSet::from_nets(
        always_allowed
            .iter()
            .copied()
            .chain(route_always.iter().flat_map(|s| s.iter())),
    );
    Some(AccessPolicy::new(always, rules, default))
}

type Body = (Vec<Rule>, Action);

fn compile_own(
    spec: &AccessControlSpec,
    max_cidrs: usize,
    object: &ObjectRef,
    errors: &mut Errors,
) -> Option<Body> {
    let before = errors.len();
    let default = match spec.default_action.as_deref() {
        None => Some(Action::Deny),
        Some(text) => parse_action(
            text,
            "allow or deny",
            &format!("{OWN_FIELD}.defaultAction"),
            object,
            errors,
        ),
    };
    let rules: Vec<_> = spec
        .rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let field = format!("{OWN_FIELD}.rules[{i}]");
            compile_rule(rule, "allow or deny", &field, object, errors)
        })
        .collect();
    let total: usize = spec.rules.iter().map(|r| r.cidrs.len()).sum();
    check_limit(
        total,
        max_cidrs,
        &format!("{OWN_FIELD}.rules"),
        object,
        errors,
    );
    if errors.len() != before {
        return None;
    }
    Some((rules.into_iter().collect::<Option<_>>()?, default?))
}

fn compile_gardener(
    config: &GardenerAclConfig,
    max_cidrs: usize,
    object: &ObjectRef,
    errors: &mut Errors,
) -> Option<Body> {
    let before = errors.len();
    let field = format!("{GARDENER_FIELD}.rule");
    let rule = compile_rule(&config.rule, "ALLOW or DENY", &field, object, errors);
    check_limit(
        config.rule.cidrs.len(),
        max_cidrs,
        &format!("{field}.cidrs"),
        object,
        errors,
    );
    if errors.len() != before {
        return None;
    }
    // ALLOW: its CIDRs, nobody else. DENY: everybody but its CIDRs.
    let rule = rule?;
    let default = rule.action.opposite();
    Some((vec![rule], default))
}

fn compile_rule(
    spec: &RuleSpec,
    actions: &str,
    field: &str,
    object: &ObjectRef,
    errors: &mut Errors,
) -> Option<Rule> {
    let action = if spec.action.is_empty() {
        errors.push(
            object,
            format!("{field}.action"),
            Problem::Missing("an action: allow or deny"),
        );
        None
    } else {
        parse_action(
            &spec.action,
            actions,
            &format!("{field}.action"),
            object,
            errors,
        )
    };
    let address_type = match spec.address_type.as_deref() {
        None => Some(AddressType::RemoteIp),
        Some(text) => AddressType::parse(text).or_else(|| {
            errors.push(
                object,
                format!("{field}.type"),
                Problem::Invalid {
                    value: text.to_string(),
                    reason: TYPES.into(),
                },
            );
            None
        }),
    };
    let cidrs_field = format!("{field}.cidrs");
    let cidrs = if spec.cidrs.is_empty() {
        errors.push(
            object,
            cidrs_field,
            Problem::Missing("at least one CIDR (a rule without networks matches nothing)"),
        );
        None
    } else {
        compile_cidrs(&spec.cidrs, object, &cidrs_field, errors)
    };
    Some(Rule {
        action: action?,
        address_type: address_type?,
        cidrs: cidrs?,
    })
}

fn parse_action(
    text: &str,
    expected: &str,
    field: &str,
    object: &ObjectRef,
    errors: &mut Errors,
) -> Option<Action> {
    Action::parse(text).or_else(|| {
        errors.push(
            object,
            field,
            Problem::Invalid {
                value: text.to_string(),
                reason: format!("expected {expected} (case-insensitive)"),
            },
        );
        None
    })
}

fn check_limit(total: usize, max: usize, field: &str, object: &ObjectRef, errors: &mut Errors) {
    if total > max {
        errors.push(
            object,
            field,
            Problem::Invalid {
                value: format!("{total} CIDRs"),
                reason: format!(
                    "a route may hold at most {max} CIDRs over all its rules (GatewayConfig spec.access.maxCIDRsPerRoute); merge adjacent networks or raise the limit"
                ),
            },
        );
    }
}
