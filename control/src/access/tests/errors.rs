//! Validation: each error names object, field, value and what would be valid.

use super::*;
use crate::error::Problem;

/// The one error of a compile, as `(field, problem)`.
fn single(errors: Vec<ConfigError>) -> (String, Problem) {
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let e = errors.into_iter().next().unwrap();
    assert_eq!(e.object, object());
    (e.field, e.problem)
}

fn invalid(problem: Problem) -> (String, String) {
    match problem {
        Problem::Invalid { value, reason } => (value, reason),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn own_errors(spec: AccessControlSpec) -> Vec<ConfigError> {
    compile_errors(Some(&spec), None, &[], 1000)
}

#[test]
fn host_bits_set() {
    let spec = own(
        vec![
            rule("allow", None, &["10.0.0.0/8"]),
            rule("allow", None, &["192.0.2.0/24", "1", "2", "1.2.3.4/24"]),
        ],
        None,
    );
    let errors = own_errors(spec);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    let e = &errors[2];
    assert_eq!(e.field, "spec.accessControl.rules[1].cidrs[3]");
    let (value, reason) = invalid(e.problem.clone());
    assert_eq!(value, "1.2.3.4/24");
    assert_eq!(reason, "host bits set; did you mean 1.2.3.0/24?");
    assert_eq!(
        e.to_string(),
        "ApiServerRoute garden-dev/shoot: spec.accessControl.rules[1].cidrs[3]: invalid value \"1.2.3.4/24\": host bits set; did you mean 1.2.3.0/24?"
    );

    let errors = own_errors(own(vec![rule("allow", None, &["2001:db8::1/64"])], None));
    let (_, problem) = single(errors);
    assert_eq!(
        invalid(problem).1,
        "host bits set; did you mean 2001:db8::/64?"
    );
}

#[test]
fn bare_address_suggests_a_host_prefix() {
    let errors = own_errors(own(
        vec![rule("allow", None, &["192.0.2.7", "2001:db8::7"])],
        None,
    ));
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0].field, "spec.accessControl.rules[0].cidrs[0]");
    let (value, reason) = invalid(errors[0].problem.clone());
    assert_eq!(value, "192.0.2.7");
    assert!(reason.contains("write 192.0.2.7/32"), "{reason}");
    let (_, reason) = invalid(errors[1].problem.clone());
    assert!(reason.contains("write 2001:db8::7/128"), "{reason}");
}

#[test]
fn invalid_cidrs() {
    let cases = [
        ("", "empty"),
        (
            "10.0.0.0/33",
            "prefix length \"33\" is not a number from 0 to 32 (IPv4)",
        ),
        ("2001:db8::/129", "from 0 to 128 (IPv6)"),
        ("10.0.0.0/", "is not a number"),
        ("10.0.0.0/+8", "is not a number"),
        ("10.0.0/8", "\"10.0.0\" is not an IPv4 or IPv6 address"),
        ("example.com", "not a CIDR; expected address/prefix-length"),
        ("010.0.0.0/8", "is not an IPv4 or IPv6 address"),
    ];
    for (text, expected) in cases {
        let errors = own_errors(own(vec![rule("allow", None, &[text])], None));
        let (field, problem) = single(errors);
        assert_eq!(field, "spec.accessControl.rules[0].cidrs[0]");
        let (value, reason) = invalid(problem);
        assert_eq!(value, text);
        assert!(reason.contains(expected), "{text}: {reason}");
    }
}

#[test]
fn empty_cidrs() {
    let errors = own_errors(own(vec![rule("deny", None, &[])], Some("allow")));
    let (field, problem) = single(errors);
    assert_eq!(field, "spec.accessControl.rules[0].cidrs");
    assert!(matches!(problem, Problem::Missing(m) if m.contains("at least one CIDR")));

    let config = GardenerAclConfig::new(rule("ALLOW", Some("remote_ip"), &[]));
    let (field, _) = single(compile_errors(None, Some(&config), &[], 50));
    assert_eq!(field, "spec.acl.rule.cidrs");
}

#[test]
fn too_many_cidrs_counts_all_rules() {
    let spec = own(
        vec![
            rule("allow", None, &["10.0.0.0/8", "10.1.0.0/16"]),
            rule("deny", None, &["192.0.2.0/24", "198.51.100.0/24"]),
        ],
        None,
    );
    assert!(compile_errors(Some(&spec), None, &[], 4).is_empty());
    let (field, problem) = single(compile_errors(Some(&spec), None, &[], 3));
    assert_eq!(field, "spec.accessControl.rules");
    let (value, reason) = invalid(problem);
    assert_eq!(value, "4 CIDRs");
    assert!(reason.contains("at most 3 CIDRs"), "{reason}");
    assert!(reason.contains("maxCIDRsPerRoute"), "{reason}");

    let config = GardenerAclConfig::new(rule("ALLOW", None, &["10.0.0.0/8", "10.1.0.0/16"]));
    let (field, problem) = single(compile_errors(None, Some(&config), &[], 1));
    assert_eq!(field, "spec.acl.rule.cidrs");
    assert_eq!(invalid(problem).0, "2 CIDRs");
}

#[test]
fn unknown_action() {
    let (field, problem) = single(own_errors(own(
        vec![rule("permit", None, &["10.0.0.0/8"])],
        None,
    )));
    assert_eq!(field, "spec.accessControl.rules[0].action");
    let (value, reason) = invalid(problem);
    assert_eq!(value, "permit");
    assert_eq!(reason, "expected allow or deny (case-insensitive)");

    let config = GardenerAclConfig::new(rule("ACCEPT", None, &["10.0.0.0/8"]));
    let (field, problem) = single(compile_errors(None, Some(&config), &[], 50));
    assert_eq!(field, "spec.acl.rule.action");
    assert_eq!(
        invalid(problem).1,
        "expected ALLOW or DENY (case-insensitive)"
    );

    let (field, problem) = single(own_errors(own(vec![rule("", None, &["10.0.0.0/8"])], None)));
    assert_eq!(field, "spec.accessControl.rules[0].action");
    assert!(matches!(problem, Problem::Missing(_)));

    let (field, problem) = single(own_errors(own(vec![], Some("reject"))));
    assert_eq!(field, "spec.accessControl.defaultAction");
    assert_eq!(invalid(problem).0, "reject");
}

#[test]
fn unknown_type() {
    let (field, problem) = single(own_errors(own(
        vec![rule("allow", Some("x_forwarded_for"), &["10.0.0.0/8"])],
        None,
    )));
    assert_eq!(field, "spec.accessControl.rules[0].type");
    let (value, reason) = invalid(problem);
    assert_eq!(value, "x_forwarded_for");
    assert!(reason.contains("remote_ip"), "{reason}");
    assert!(reason.contains("direct_remote_ip"), "{reason}");
    assert!(reason.contains("source_ip"), "{reason}");

    let config = GardenerAclConfig::new(rule("DENY", Some("peer_ip"), &["10.0.0.0/8"]));
    let (field, _) = single(compile_errors(None, Some(&config), &[], 50));
    assert_eq!(field, "spec.acl.rule.type");
}

#[test]
fn both_spellings_is_an_error() {
    let spec = own(vec![rule("allow", None, &["10.0.0.0/8"])], None);
    let config = GardenerAclConfig::new(rule("ALLOW", None, &["10.0.0.0/8"]));
    let (field, problem) = single(compile_errors(Some(&spec), Some(&config), &[], 50));
    assert_eq!(field, "spec.acl");
    let (_, reason) = invalid(problem);
    assert!(reason.contains("accessControl"), "{reason}");

    // Other problems are reported alongside the conflict.
    let bad = own(vec![rule("allow", None, &["10.0.0.1/8"])], None);
    let errors = compile_errors(Some(&bad), Some(&config), &[], 50);
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["spec.accessControl.rules[0].cidrs[0]", "spec.acl"]);
}

#[test]
fn route_always_allowed_cidrs_are_validated() {
    let (field, problem) = single(compile_errors(
        None,
        None,
        &["10.0.0.0/8", "10.180.0.1/16"],
        50,
    ));
    assert_eq!(field, "spec.alwaysAllowedCIDRs[1]");
    assert_eq!(
        invalid(problem).1,
        "host bits set; did you mean 10.180.0.0/16?"
    );
}

#[test]
fn errors_accumulate_over_the_whole_route() {
    let spec = own(
        vec![
            rule("allow", Some("bogus"), &["10.0.0.0/8", "bad"]),
            rule("maybe", None, &[]),
        ],
        Some("perhaps"),
    );
    let errors = own_errors(spec);
    let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.accessControl.defaultAction",
            "spec.accessControl.rules[0].type",
            "spec.accessControl.rules[0].cidrs[1]",
            "spec.accessControl.rules[1].action",
            "spec.accessControl.rules[1].cidrs",
        ]
    );
}

#[test]
fn compile_cidrs_reports_each_entry() {
    let mut errors = Errors::default();
    let list = vec![
        "10.0.0.0/8".to_string(),
        "10.0.0.1".to_string(),
        "x".to_string(),
    ];
    assert!(compile_cidrs(
        &list,
        &object(),
        "spec.listeners[0].trustedProxies",
        &mut errors
    )
    .is_none());
    let fields: Vec<_> = errors.into_vec().into_iter().map(|e| e.field).collect();
    assert_eq!(
        fields,
        [
            "spec.listeners[0].trustedProxies[1]",
            "spec.listeners[0].trustedProxies[2]"
        ]
    );
    let mut errors = Errors::default();
    let set = compile_cidrs(&[], &object(), "f", &mut errors).unwrap();
    assert!(set.is_empty() && errors.is_empty());
}
