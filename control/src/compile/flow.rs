//! `flowControl`: merged (a route's fields over the gateway's defaults), checked field by
//! field, and compiled into [`FlowControl`].

use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::error::{Errors, ObjectRef, Problem};
use crate::flow_settings::{
    Exempt, FlowControl, FlowMatch, FlowPolicy, Rate, ResourcePattern, UrlPattern,
};
use crate::model::{FlowControlSpec, FlowMatchSpec, FlowPolicySpec};

/// Verbs a policy may name: kube-apiserver's resource verbs, `connect` for upgrades,
/// and the methods of non-resource requests.
const VERBS: [&str; 14] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "proxy",
    "connect",
    "head",
    "post",
    "put",
    "options",
];

const DEFAULT_MAX_QUEUED: u32 = 100;
const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_QUEUE_TIMEOUT: Duration = Duration::from_secs(60);

/// A route's settings over the gateway's defaults, field by field; a route's
/// `policies` replace the defaults' list.
pub(super) fn merge(
    defaults: Option<&FlowControlSpec>,
    route: Option<&FlowControlSpec>,
) -> Option<FlowControlSpec> {
    match (defaults, route) {
        (None, None) => None,
        (Some(only), None) | (None, Some(only)) => Some(only.clone()),
        (Some(defaults), Some(route)) => Some(FlowControlSpec {
            max_in_flight: route.max_in_flight.or(defaults.max_in_flight),
            max_queued: route.max_queued.or(defaults.max_queued),
            queue_timeout: route.queue_timeout.or(defaults.queue_timeout),
            exempt: route.exempt.clone().or_else(|| defaults.exempt.clone()),
            policies: if route.policies.is_empty() {
                defaults.policies.clone()
            } else {
                route.policies.clone()
            },
        }),
    }
}

/// Check and compile `spec` (found at `field`). `None` when there is nothing to limit:
/// no cap and no policy (requests then pay nothing for flow control).
pub(super) fn compile(
    spec: Option<&FlowControlSpec>,
    field: &str,
    object_ref: &ObjectRef,
    errors: &mut Errors,
) -> Option<Arc<FlowControl>> {
    let spec = spec?;
    let mut invalid = |at: String, value: String, reason: &str| {
        errors.push(
            object_ref,
            at,
            Problem::Invalid {
                value,
                reason: reason.into(),
            },
        );
    };
    if spec.max_in_flight == Some(0) {
        invalid(
            format!("{field}.maxInFlight"),
            "0".into(),
            "0 would refuse every request; leave it out for no limit",
        );
    }
    let queue_timeout = spec.queue_timeout.map_or(DEFAULT_QUEUE_TIMEOUT, |d| d.0);
    if queue_timeout.is_zero() || queue_timeout > MAX_QUEUE_TIMEOUT {
        invalid(
            format!("{field}.queueTimeout"),
            humantime::format_duration(queue_timeout).to_string(),
            "must be more than 0 and at most 60s",
        );
    }
    let exempt = spec.exempt.clone().unwrap_or_default();
    let exempt = Exempt {
        groups: exempt
            .groups
            .unwrap_or_else(|| vec!["system:masters".into()]),
        users: exempt.users,
        non_resource_urls: exempt
            .non_resource_urls
            .unwrap_or_else(|| vec!["/healthz".into(), "/livez".into(), "/readyz".into()])
            .iter()
            .enumerate()
            .filter_map(|(i, url)| {
                url_pattern(url)
                    .map_err(|reason| {
                        invalid(
                            format!("{field}.exempt.nonResourceURLs[{i}]"),
                            url.clone(),
                            reason,
                        );
                    })
                    .ok()
            })
            .collect(),
    };
    let mut policies = Vec::new();
    for (i, policy) in spec.policies.iter().enumerate() {
        let at = format!("{field}.policies[{i}]");
        if let Some(compiled) = compile_policy(policy, &at, object_ref, errors) {
            policies.push((policy.order, i, compiled));
        }
    }
    check_names_and_order(spec, field, object_ref, errors, &policies);
    if spec.max_in_flight.is_none() && spec.policies.is_empty() {
        return None;
    }
    policies.sort_by_key(|(order, position, _)| (order.unwrap_or(u32::MAX), *position));
    Some(Arc::new(FlowControl {
        max_in_flight: spec.max_in_flight,
        max_queued: spec.max_queued.unwrap_or(DEFAULT_MAX_QUEUED),
        queue_timeout,
        exempt,
        policies: policies.into_iter().map(|(_, _, p)| p).collect(),
    }))
}

fn compile_policy(
    spec: &FlowPolicySpec,
    at: &str,
    object_ref: &ObjectRef,
    errors: &mut Errors,
) -> Option<FlowPolicy> {
    let before = errors.len();
    let mut invalid = |field: &str, value: String, reason: &str| {
        errors.push(
            object_ref,
            format!("{at}.{field}"),
            Problem::Invalid {
                value,
                reason: reason.into(),
            },
        );
    };
    if spec.name.trim().is_empty() {
        invalid(
            "name",
            spec.name.clone(),
            "a policy needs a name (metrics and 429s name it)",
        );
    }
    if spec.name.trim() == "route" {
        invalid(
            "name",
            spec.name.clone(),
            "`route` names the route's own cap in the metrics; choose another name",
        );
    }
    for (field, value) in [
        ("maxInFlight", spec.max_in_flight),
        ("maxWatches", spec.max_watches),
    ] {
        if value == Some(0) {
            invalid(
                field,
                "0".into(),
                "0 would refuse every request; leave it out for no limit",
            );
        }
    }
    let rate = match (spec.qps, spec.burst) {
        (Some(qps), _) if !(qps.is_finite() && qps > 0.0) => {
            invalid(
                "qps",
                qps.to_string(),
                "must be more than 0; leave it out for no limit",
            );
            None
        }
        (_, Some(0)) => {
            invalid("burst", "0".into(), "must be at least 1");
            None
        }
        (None, Some(burst)) => {
            invalid("burst", burst.to_string(), "needs qps");
            None
        }
        (Some(qps), burst) => Some(Rate {
            qps,
            burst: burst.unwrap_or_else(|| {
                let rounded = qps.ceil();
                if rounded >= f64::from(u32::MAX) {
                    u32::MAX
                } else {
                    // In range and at least 1: the cast is exact.
                    (rounded as u32).max(1)
                }
            }),
        }),
        (None, None) => None,
    };
    if spec.max_in_flight.is_none() && spec.qps.is_none() && spec.max_watches.is_none() {
        invalid(
            "maxInFlight",
            String::new(),
            "the policy sets no limit: give maxInFlight, qps or maxWatches",
        );
    }
    let matches = compile_match(&spec.matches, &format!("{at}.match"), object_ref, errors);
    if errors.len() != before {
        return None;
    }
    Some(FlowPolicy {
        name: Arc::from(spec.name.trim()),
        matches,
        max_in_flight: spec.max_in_flight,
        rate,
        max_watches: spec.max_watches,
    })
}

fn compile_match(
    spec: &FlowMatchSpec,
    at: &str,
    object_ref: &ObjectRef,
    errors: &mut Errors,
) -> FlowMatch {
    let mut invalid = |field: String, value: &str, reason: &str| {
        errors.push(
            object_ref,
            format!("{at}.{field}"),
            Problem::Invalid {
                value: value.to_string(),
                reason: reason.into(),
            },
        );
    };
    let mut verbs = Vec::new();
    for (i, verb) in spec.verbs.iter().enumerate() {
        let lower = verb.to_ascii_lowercase();
        if VERBS.contains(&lower.as_str()) {
            verbs.push(lower);
        } else {
            invalid(
                format!("verbs[{i}]"),
                verb,
                &format!("unknown verb; one of {}", VERBS.join(", ")),
            );
        }
    }
    let mut sources = Vec::new();
    for (i, cidr) in spec.source_cidrs.iter().enumerate() {
        match cidr.trim().parse::<IpNet>() {
            Ok(net) if net.trunc() == net => sources.push(net),
            Ok(_) => invalid(
                format!("sourceCIDRs[{i}]"),
                cidr,
                "host bits are set; use the network address",
            ),
            Err(_) => invalid(format!("sourceCIDRs[{i}]"), cidr, "not a CIDR"),
        }
    }
    let mut resources = Vec::new();
    for (i, resource) in spec.resources.iter().enumerate() {
        let text = resource.trim();
        let pattern = match text.split_once('/') {
            _ if text == "*" => Some(ResourcePattern::Any),
            None if !text.is_empty() => Some(ResourcePattern::Named {
                group: String::new(),
                resource: text.to_string(),
            }),
            Some((group, resource)) if !resource.is_empty() && !resource.contains('/') => {
                Some(ResourcePattern::Named {
                    group: group.to_string(),
                    resource: resource.to_string(),
                })
            }
            _ => None,
        };
        match pattern {
            Some(pattern) => resources.push(pattern),
            None => invalid(
                format!("resources[{i}]"),
                resource,
                "write `resource` (core group), `group/resource` or `*`",
            ),
        }
    }
    let mut non_resource_urls = Vec::new();
    for (i, url) in spec.non_resource_urls.iter().enumerate() {
        match url_pattern(url) {
            Ok(pattern) => non_resource_urls.push(pattern),
            Err(reason) => invalid(format!("nonResourceURLs[{i}]"), url, reason),
        }
    }
    if !resources.is_empty() && !non_resource_urls.is_empty() {
        invalid(
            "nonResourceURLs".into(),
            "",
            "a policy matches resources or non-resource URLs, not both; split it in two",
        );
    }
    FlowMatch {
        users: spec.users.clone(),
        groups: spec.groups.clone(),
        sources,
        verbs,
        resources,
        namespaces: spec.namespaces.clone(),
        non_resource_urls,
    }
}

fn url_pattern(url: &str) -> Result<UrlPattern, &'static str> {
    match url.strip_suffix('*') {
        _ if !url.starts_with('/') => Err("must be an absolute path"),
        Some(prefix) if prefix.contains('*') => Err("`*` only at the end"),
        Some(prefix) => Ok(UrlPattern::Prefix(prefix.to_string())),
        None if url.contains('*') => Err("`*` only at the end"),
        None => Ok(UrlPattern::Exact(url.to_string())),
    }
}

/// Names are unique, and two policies that can match the same request differ in
/// `order` (else which one a request meets would depend on their position).
fn check_names_and_order(
    spec: &FlowControlSpec,
    field: &str,
    object_ref: &ObjectRef,
    errors: &mut Errors,
    policies: &[(Option<u32>, usize, FlowPolicy)],
) {
    for (i, policy) in spec.policies.iter().enumerate() {
        if spec.policies[..i]
            .iter()
            .any(|earlier| earlier.name.trim() == policy.name.trim())
        {
            errors.push(
                object_ref,
                format!("{field}.policies[{i}].name"),
                Problem::Conflict {
                    value: policy.name.clone(),
                    other: "another policy of this flowControl".into(),
                },
            );
        }
    }
    for (n, (order, i, policy)) in policies.iter().enumerate() {
        for (earlier_order, j, earlier) in &policies[..n] {
            if order == earlier_order && overlap(&policy.matches, &earlier.matches) {
                errors.push(
                    object_ref,
                    format!("{field}.policies[{i}].order"),
                    Problem::Invalid {
                        value: order.map_or_else(|| "(none)".into(), |o| o.to_string()),
                        reason: format!(
                            "policy {:?} can match the same requests as policy {:?} (policies[{j}]) with the same order; give them different orders",
                            &*policy.name, &*earlier.name
                        ),
                    },
                );
            }
        }
    }
}

/// Whether some request could match both: no dimension both name with disjoint values.
fn overlap(a: &FlowMatch, b: &FlowMatch) -> bool {
    fn lists(a: &[String], b: &[String]) -> bool {
        a.is_empty() || b.is_empty() || a.iter().any(|x| b.contains(x))
    }
    let sources = a.sources.is_empty()
        || b.sources.is_empty()
        || a.sources
            .iter()
            .any(|x| b.sources.iter().any(|y| x.contains(y) || y.contains(x)));
    let resources = a.resources.is_empty()
        || b.resources.is_empty()
        || a.resources.iter().any(|x| {
            b.resources
                .iter()
                .any(|y| x == y || *x == ResourcePattern::Any || *y == ResourcePattern::Any)
        });
    let urls = a.non_resource_urls.is_empty()
        || b.non_resource_urls.is_empty()
        || a.non_resource_urls
            .iter()
            .any(|x| b.non_resource_urls.iter().any(|y| urls_overlap(x, y)));
    // One about resources only, the other about non-resource URLs only: disjoint.
    let kinds = !((!a.resources.is_empty() && !b.non_resource_urls.is_empty())
        || (!a.non_resource_urls.is_empty() && !b.resources.is_empty()));
    lists(&a.users, &b.users)
        && lists(&a.groups, &b.groups)
        && lists(&a.verbs, &b.verbs)
        && lists(&a.namespaces, &b.namespaces)
        && sources
        && resources
        && urls
        && kinds
}

fn urls_overlap(a: &UrlPattern, b: &UrlPattern) -> bool {
    match (a, b) {
        (UrlPattern::Exact(x), UrlPattern::Exact(y)) => x == y,
        (UrlPattern::Prefix(p), UrlPattern::Exact(e))
        | (UrlPattern::Exact(e), UrlPattern::Prefix(p)) => e.starts_with(p.as_str()),
        (UrlPattern::Prefix(x), UrlPattern::Prefix(y)) => {
            x.starts_with(y.as_str()) || y.starts_with(x.as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object() -> ObjectRef {
        ObjectRef::Named {
            kind: "ApiServerRoute".into(),
            namespace: "garden".into(),
            name: "shoot".into(),
        }
    }

    fn errors_of(spec: &FlowControlSpec) -> Vec<String> {
        let mut errors = Errors::default();
        compile(Some(spec), "spec.flowControl", &object(), &mut errors);
        errors.into_vec().iter().map(ToString::to_string).collect()
    }

    fn policy(name: &str, verbs: &[&str]) -> FlowPolicySpec {
        FlowPolicySpec {
            name: name.into(),
            matches: FlowMatchSpec {
                verbs: verbs.iter().map(|v| v.to_string()).collect(),
                ..FlowMatchSpec::default()
            },
            qps: Some(10.0),
            ..FlowPolicySpec::default()
        }
    }

    #[test]
    fn bad_limits_name_their_field() {
        let mut zero = policy("p", &["list"]);
        zero.max_in_flight = Some(0);
        zero.burst = Some(0);
        let mut unknown = policy("q", &["lists"]);
        unknown.order = Some(2);
        let spec = FlowControlSpec {
            max_in_flight: Some(0),
            policies: vec![zero, unknown],
            ..FlowControlSpec::default()
        };
        let errors = errors_of(&spec).join("\n");
        for needle in [
            "spec.flowControl.maxInFlight",
            "spec.flowControl.policies[0].maxInFlight",
            "spec.flowControl.policies[0].burst",
            "spec.flowControl.policies[1].match.verbs[0]",
            "unknown verb",
        ] {
            assert!(errors.contains(needle), "{needle} in:\n{errors}");
        }
    }

    #[test]
    fn policies_that_cannot_work_name_their_field() {
        let mut both = policy("both", &["get"]);
        both.matches.resources = vec!["pods".into()];
        both.matches.non_resource_urls = vec!["/metrics".into()];
        both.order = Some(1);
        let mut limitless = policy("limitless", &["list"]);
        limitless.qps = None;
        limitless.order = Some(2);
        let mut named_route = policy("route", &["watch"]);
        named_route.order = Some(3);
        let mut unnamed = policy(" ", &["create"]);
        unnamed.order = Some(4);
        let mut twice = policy("limitless", &["patch"]);
        twice.order = Some(5);
        let spec = FlowControlSpec {
            queue_timeout: Some("61s".parse().unwrap()),
            policies: vec![both, limitless, named_route, unnamed, twice],
            ..FlowControlSpec::default()
        };
        let errors = errors_of(&spec).join("\n");
        for needle in [
            "spec.flowControl.queueTimeout",
            "spec.flowControl.policies[0].match.nonResourceURLs",
            "spec.flowControl.policies[1].maxInFlight: invalid value \"\": the policy sets no limit",
            "spec.flowControl.policies[2].name",
            "spec.flowControl.policies[3].name",
            "spec.flowControl.policies[4].name",
        ] {
            assert!(errors.contains(needle), "{needle} in:\n{errors}");
        }
    }

    #[test]
    fn overlapping_policies_need_different_orders() {
        let spec = FlowControlSpec {
            policies: vec![
                policy("lists", &["list"]),
                policy("reads", &["get", "list"]),
            ],
            ..FlowControlSpec::default()
        };
        let errors = errors_of(&spec).join("\n");
        assert!(
            errors.contains("spec.flowControl.policies[1].order") && errors.contains("\"lists\""),
            "{errors}"
        );
        // Disjoint verbs need no order; overlapping ones with orders are fine.
        let disjoint = FlowControlSpec {
            policies: vec![policy("lists", &["list"]), policy("gets", &["get"])],
            ..FlowControlSpec::default()
        };
        assert!(errors_of(&disjoint).is_empty());
        let mut first = policy("lists", &["list"]);
        first.order = Some(1);
        let ordered = FlowControlSpec {
            policies: vec![policy("reads", &["get", "list"]), first],
            ..FlowControlSpec::default()
        };
        assert!(errors_of(&ordered).is_empty());
        let mut errors = Errors::default();
        let compiled = compile(Some(&ordered), "f", &object(), &mut errors).unwrap();
        assert_eq!(&*compiled.policies[0].name, "lists", "lower order first");
    }

    #[test]
    fn a_route_overrides_the_defaults_field_by_field() {
        let defaults = FlowControlSpec {
            max_in_flight: Some(100),
            policies: vec![policy("default", &["list"])],
            ..FlowControlSpec::default()
        };
        let route = FlowControlSpec {
            max_queued: Some(5),
            ..FlowControlSpec::default()
        };
        let merged = merge(Some(&defaults), Some(&route)).unwrap();
        assert_eq!(merged.max_in_flight, Some(100));
        assert_eq!(merged.max_queued, Some(5));
        assert_eq!(merged.policies.len(), 1);
        let mut errors = Errors::default();
        let nothing = FlowControlSpec::default();
        assert!(compile(Some(&nothing), "f", &object(), &mut errors).is_none());
        assert!(errors.is_empty());
    }
}
