//! `may_tighten`: never a wrong "no"; "no" for equal policies and plain loosening.

use super::*;

fn allow(cidrs: &[&str]) -> AccessPolicy {
    policy_with(
        &own(vec![rule("allow", None, cidrs)], None),
        &["10.250.0.0/16"],
        &[],
    )
}

fn deny(rules: Vec<RuleSpec>) -> AccessPolicy {
    policy_with(&own(rules, Some("allow")), &["10.250.0.0/16"], &[])
}

#[test]
fn identical_policies_do_not_tighten() {
    let a = allow(&["1.2.3.0/24", "2001:db8::/32"]);
    let b = allow(&["1.2.3.0/24", "2001:db8::/32"]);
    assert!(!a.may_tighten(&b));
    assert!(!a.may_tighten(&a.clone()));
    assert!(!AccessPolicy::allow_all().may_tighten(&AccessPolicy::allow_all()));
    // Even shapes without an exact analysis: equal means no.
    let mixed = own(
        vec![
            rule("deny", None, &["1.2.3.128/25"]),
            rule("allow", None, &["1.2.3.0/24"]),
        ],
        None,
    );
    assert!(!policy(&mixed).may_tighten(&policy(&mixed)));
}

#[test]
fn removing_a_cidr_from_an_allow_rule_tightens() {
    let old = allow(&["1.2.3.0/24", "5.6.7.0/24"]);
    let new = allow(&["1.2.3.0/24"]);
    assert!(new.may_tighten(&old));
    // The reverse (adding a CIDR) only loosens.
    assert!(!old.may_tighten(&new));
    // Splitting a network into halves is no change for addresses.
    assert!(!allow(&["1.2.3.0/25", "1.2.3.128/25"]).may_tighten(&allow(&["1.2.3.0/24"])));
}

#[test]
fn adding_a_deny_rule_tightens() {
    let old = deny(vec![rule("deny", None, &["198.51.100.0/24"])]);
    let new = deny(vec![
        rule("deny", None, &["198.51.100.0/24"]),
        rule("deny", Some("direct_remote_ip"), &["192.0.2.0/24"]),
    ]);
    assert!(new.may_tighten(&old));
    assert!(!old.may_tighten(&new));
    // From no ACL to a deny rule.
    assert!(old.may_tighten(&AccessPolicy::allow_all()));
    // From anything to no ACL: never.
    assert!(!AccessPolicy::allow_all().may_tighten(&new));
}

#[test]
fn allow_rule_appearing_where_there_was_none_tightens() {
    assert!(allow(&["1.2.3.0/24"]).may_tighten(&AccessPolicy::allow_all()));
}

#[test]
fn always_allowed_changes_count() {
    let spec = own(vec![rule("allow", None, &["1.2.3.0/24"])], None);
    let wide = policy_with(&spec, &["10.250.0.0/16"], &["10.180.0.0/16"]);
    let narrow = policy_with(&spec, &["10.250.0.0/16"], &[]);
    assert!(narrow.may_tighten(&wide));
    assert!(!wide.may_tighten(&narrow));
    // An address moving from always-allowed into an allow rule keeps it allowed.
    let moved = policy_with(
        &own(
            vec![rule("allow", None, &["1.2.3.0/24", "10.180.0.0/16"])],
            None,
        ),
        &["10.250.0.0/16"],
        &[],
    );
    assert!(!moved.may_tighten(&wide));

    let deny_spec = own(vec![rule("deny", None, &["10.0.0.0/8"])], Some("allow"));
    let wide = policy_with(&deny_spec, &["10.250.0.0/16"], &[]);
    let narrow = policy_with(&deny_spec, &[], &[]);
    assert!(narrow.may_tighten(&wide));
    assert!(!wide.may_tighten(&narrow));
}

#[test]
fn changing_address_type_tightens() {
    let old = allow(&["1.2.3.0/24"]);
    let new = policy_with(
        &own(
            vec![rule("allow", Some("direct_remote_ip"), &["1.2.3.0/24"])],
            None,
        ),
        &["10.250.0.0/16"],
        &[],
    );
    assert!(new.may_tighten(&old));
    // remote_ip and source_ip read the same address.
    let source = policy_with(
        &own(
            vec![rule("allow", Some("source_ip"), &["1.2.3.0/24"])],
            None,
        ),
        &["10.250.0.0/16"],
        &[],
    );
    assert!(!source.may_tighten(&old));
}

#[test]
fn flipping_between_allow_and_deny_tightens() {
    let allow_list = allow(&["1.2.3.0/24"]);
    let deny_list = deny(vec![rule("deny", None, &["1.2.3.0/24"])]);
    assert!(allow_list.may_tighten(&deny_list));
    assert!(deny_list.may_tighten(&allow_list));
}

#[test]
fn mixed_rules_are_conservative() {
    let a = policy(&own(
        vec![
            rule("deny", None, &["1.2.3.128/25"]),
            rule("allow", None, &["1.2.3.0/24"]),
        ],
        None,
    ));
    let b = policy(&own(
        vec![
            rule("deny", None, &["1.2.3.192/26"]),
            rule("allow", None, &["1.2.3.0/24"]),
        ],
        None,
    ));
    assert!(a.may_tighten(&b));
    assert!(
        b.may_tighten(&a),
        "conservative: mixed shapes always say yes"
    );
    // Trailing rules with the default's action are ignored by the analysis.
    let trailing = policy_with(
        &own(
            vec![
                rule("allow", None, &["1.2.3.0/24"]),
                rule("deny", None, &["9.9.9.0/24"]),
            ],
            None,
        ),
        &["10.250.0.0/16"],
        &[],
    );
    assert!(!trailing.may_tighten(&allow(&["1.2.3.0/24"])));
}
