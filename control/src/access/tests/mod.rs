//! Unit tests of the allowlist core: semantics, validation messages, the Gardener
//! spelling, `may_tighten`, and the trie against a naive linear scan.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod errors;
mod gardener;
mod property;
mod semantics;
mod tighten;
mod trie;

use std::net::IpAddr;

use super::*;
use crate::error::{ConfigError, Errors, ObjectRef};

fn object() -> ObjectRef {
    ObjectRef::Named {
        kind: "ApiServerRoute".into(),
        namespace: "garden-dev".into(),
        name: "shoot".into(),
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn rule(action: &str, address_type: Option<&str>, cidrs: &[&str]) -> RuleSpec {
    RuleSpec {
        action: action.into(),
        address_type: address_type.map(Into::into),
        cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
    }
}

fn own(rules: Vec<RuleSpec>, default_action: Option<&str>) -> AccessControlSpec {
    AccessControlSpec {
        rules,
        default_action: default_action.map(Into::into),
    }
}

/// Compile apigate's spelling with the given always-allowed lists; panics on errors.
fn policy_with(spec: &AccessControlSpec, always: &[&str], route_always: &[&str]) -> AccessPolicy {
    let always: Vec<ipnet::IpNet> = always.iter().map(|c| c.parse().unwrap()).collect();
    let route_always: Vec<String> = route_always.iter().map(|c| c.to_string()).collect();
    let mut errors = Errors::default();
    let policy = compile_policy(
        Some(spec),
        None,
        &always,
        &route_always,
        1000,
        &object(),
        &mut errors,
    );
    assert!(errors.is_empty(), "{:?}", errors.into_vec());
    policy.unwrap()
}

fn policy(spec: &AccessControlSpec) -> AccessPolicy {
    policy_with(spec, &[], &[])
}

fn gardener_policy(config: &GardenerAclConfig, always: &[&str]) -> AccessPolicy {
    let always: Vec<ipnet::IpNet> = always.iter().map(|c| c.parse().unwrap()).collect();
    let mut errors = Errors::default();
    let policy = compile_policy(
        None,
        Some(config),
        &always,
        &[],
        1000,
        &object(),
        &mut errors,
    );
    assert!(errors.is_empty(), "{:?}", errors.into_vec());
    policy.unwrap()
}

/// Compile and return the errors, asserting that the result is `None` exactly when
/// errors were pushed.
fn compile_errors(
    own: Option<&AccessControlSpec>,
    gardener: Option<&GardenerAclConfig>,
    route_always: &[&str],
    max_cidrs: usize,
) -> Vec<ConfigError> {
    let route_always: Vec<String> = route_always.iter().map(|c| c.to_string()).collect();
    let mut errors = Errors::default();
    let result = compile_policy(
        own,
        gardener,
        &[],
        &route_always,
        max_cidrs,
        &object(),
        &mut errors,
    );
    assert_eq!(result.is_none(), !errors.is_empty());
    errors.into_vec()
}

/// Shorthand: decide with the same address as TCP peer and PROXY source.
fn allows(policy: &AccessPolicy, addr: &str) -> bool {
    policy.decide(ip(addr), ip(addr)).allowed()
}
