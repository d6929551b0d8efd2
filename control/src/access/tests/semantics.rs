//! Evaluation order and matching: rule types, first match wins, defaults, always-allowed,
//! address families and prefix-length edges.

use super::*;

#[test]
fn no_policy_allows_everyone() {
    let p = AccessPolicy::allow_all();
    let d = p.decide(ip("192.0.2.1"), ip("2001:db8::1"));
    assert_eq!(
        d,
        Decision {
            action: Action::Allow,
            reason: MatchReason::NoPolicy
        }
    );
    assert_eq!(p.cidr_count(), 0);

    // Neither spelling set: allow all, even with always-allowed networks around.
    assert!(compile_errors(None, None, &["10.0.0.0/8"], 10).is_empty());
    let mut errors = Errors::default();
    let p = compile_policy(None, None, &[], &[], 10, &object(), &mut errors).unwrap();
    assert_eq!(p, AccessPolicy::allow_all());
}

#[test]
fn remote_ip_matches_the_proxy_address() {
    let p = policy(&own(
        vec![rule("allow", Some("remote_ip"), &["203.0.113.0/24"])],
        None,
    ));
    let lb = ip("10.0.0.5");
    let d = p.decide(lb, ip("203.0.113.9"));
    assert_eq!(d.action, Action::Allow);
    assert_eq!(
        d.reason,
        MatchReason::Rule {
            index: 0,
            address_type: AddressType::RemoteIp
        }
    );
    // The load balancer's address is not what remote_ip looks at.
    assert!(!p.decide(ip("203.0.113.9"), ip("198.51.100.1")).allowed());
}

#[test]
fn type_defaults_to_remote_ip() {
    let p = policy(&own(vec![rule("allow", None, &["203.0.113.0/24"])], None));
    assert_eq!(
        p.decide(ip("10.0.0.5"), ip("203.0.113.9")).reason,
        MatchReason::Rule {
            index: 0,
            address_type: AddressType::RemoteIp
        }
    );
}

#[test]
fn source_ip_is_the_same_address_as_remote_ip() {
    let p = policy(&own(
        vec![rule("allow", Some("source_ip"), &["203.0.113.0/24"])],
        None,
    ));
    let d = p.decide(ip("10.0.0.5"), ip("203.0.113.9"));
    assert!(d.allowed());
    assert_eq!(
        d.reason,
        MatchReason::Rule {
            index: 0,
            address_type: AddressType::SourceIp
        }
    );
    assert!(!p.decide(ip("203.0.113.9"), ip("10.0.0.5")).allowed());
}

#[test]
fn direct_remote_ip_matches_the_tcp_peer() {
    let p = policy(&own(
        vec![rule("allow", Some("direct_remote_ip"), &["10.0.0.0/24"])],
        None,
    ));
    let d = p.decide(ip("10.0.0.5"), ip("203.0.113.9"));
    assert!(d.allowed());
    assert_eq!(
        d.reason,
        MatchReason::Rule {
            index: 0,
            address_type: AddressType::DirectRemoteIp
        }
    );
    assert!(!p.decide(ip("203.0.113.9"), ip("10.0.0.5")).allowed());
}

#[test]
fn first_match_wins_deny_before_allow() {
    let p = policy(&own(
        vec![
            rule("deny", None, &["203.0.113.128/25"]),
            rule("allow", None, &["203.0.113.0/24"]),
        ],
        None,
    ));
    let d = p.decide(ip("10.0.0.1"), ip("203.0.113.200"));
    assert_eq!(d.action, Action::Deny);
    assert!(matches!(d.reason, MatchReason::Rule { index: 0, .. }));
    let d = p.decide(ip("10.0.0.1"), ip("203.0.113.5"));
    assert_eq!(d.action, Action::Allow);
    assert!(matches!(d.reason, MatchReason::Rule { index: 1, .. }));
}

#[test]
fn first_match_wins_allow_before_deny() {
    let p = policy(&own(
        vec![
            rule("allow", None, &["203.0.113.128/25"]),
            rule("deny", None, &["203.0.113.0/24"]),
        ],
        Some("allow"),
    ));
    let d = p.decide(ip("10.0.0.1"), ip("203.0.113.200"));
    assert_eq!(d.action, Action::Allow);
    assert!(matches!(d.reason, MatchReason::Rule { index: 0, .. }));
    let d = p.decide(ip("10.0.0.1"), ip("203.0.113.5"));
    assert_eq!(d.action, Action::Deny);
    assert!(matches!(d.reason, MatchReason::Rule { index: 1, .. }));
    // Outside every rule: the default (allow).
    let d = p.decide(ip("10.0.0.1"), ip("198.51.100.1"));
    assert_eq!(
        d,
        Decision {
            action: Action::Allow,
            reason: MatchReason::Default
        }
    );
}

#[test]
fn default_action_defaults_to_deny_and_is_case_insensitive() {
    let rules = vec![rule("Allow", None, &["203.0.113.0/24"])];
    let p = policy(&own(rules.clone(), None));
    assert_eq!(
        p.decide(ip("10.0.0.1"), ip("198.51.100.1")),
        Decision {
            action: Action::Deny,
            reason: MatchReason::Default
        }
    );
    let p = policy(&own(rules.clone(), Some("ALLOW")));
    assert!(allows(&p, "198.51.100.1"));
    let p = policy(&own(rules, Some("DeNy")));
    assert!(!allows(&p, "198.51.100.1"));
    // No rules at all: the default decides everything (except always-allowed).
    let p = policy_with(&own(vec![], None), &["10.250.0.0/16"], &[]);
    assert!(!allows(&p, "198.51.100.1"));
    assert!(allows(&p, "10.250.3.4"));
}

#[test]
fn always_allowed_beats_a_deny_rule() {
    let spec = own(
        vec![rule("deny", None, &["0.0.0.0/0", "::/0"])],
        Some("allow"),
    );
    let p = policy_with(
        &spec,
        &["10.250.0.0/16"],
        &["10.180.0.0/16", "2001:db8:e::/48"],
    );
    for addr in ["10.250.1.2", "10.180.7.7", "2001:db8:e::42"] {
        let d = p.decide(ip("192.0.2.1"), ip(addr));
        assert_eq!(
            d,
            Decision {
                action: Action::Allow,
                reason: MatchReason::AlwaysAllowed
            },
            "{addr}"
        );
    }
    assert!(!allows(&p, "198.51.100.1"));
    assert!(!allows(&p, "2001:db8:f::1"));
}

#[test]
fn always_allowed_checks_the_remote_address_not_the_peer() {
    let spec = own(vec![rule("allow", None, &["203.0.113.0/24"])], None);
    let p = policy_with(&spec, &["10.250.0.0/16"], &[]);
    // The load balancer sits in the seed's node network; the client does not.
    assert!(!p.decide(ip("10.250.0.9"), ip("198.51.100.1")).allowed());
    assert!(p.decide(ip("192.0.2.1"), ip("10.250.0.9")).allowed());
}

#[test]
fn ipv4_mapped_ipv6_matches_ipv4_rules() {
    let spec = own(
        vec![
            rule("allow", None, &["203.0.113.0/24"]),
            rule("allow", Some("direct_remote_ip"), &["192.0.2.0/24"]),
        ],
        None,
    );
    let p = policy_with(&spec, &["10.250.0.0/16"], &[]);
    let mapped = ip("::ffff:203.0.113.7");
    let d = p.decide(ip("::ffff:198.51.100.1"), mapped);
    assert!(matches!(d.reason, MatchReason::Rule { index: 0, .. }));
    let d = p.decide(ip("::ffff:192.0.2.1"), ip("::ffff:198.51.100.1"));
    assert!(matches!(d.reason, MatchReason::Rule { index: 1, .. }));
    assert_eq!(
        p.decide(ip("::1"), ip("::ffff:10.250.1.1")).reason,
        MatchReason::AlwaysAllowed
    );
    assert!(!allows(&p, "::ffff:198.51.100.1"));
}

#[test]
fn ipv4_mapped_cidr_is_the_ipv4_network() {
    let p = policy(&own(
        vec![rule("allow", None, &["::ffff:203.0.113.0/120"])],
        None,
    ));
    assert!(allows(&p, "203.0.113.7"));
    assert!(allows(&p, "::ffff:203.0.113.7"));
    assert!(!allows(&p, "203.0.114.7"));
    assert_eq!(
        p,
        policy(&own(vec![rule("allow", None, &["203.0.113.0/24"])], None))
    );
}

#[test]
fn ipv6_rules() {
    let p = policy(&own(
        vec![
            rule("deny", None, &["2001:db8:bad::/48"]),
            rule("allow", None, &["2001:db8::/32"]),
        ],
        None,
    ));
    assert!(allows(&p, "2001:db8:1::1"));
    assert!(!allows(&p, "2001:db8:bad::1"));
    assert!(!allows(&p, "2001:db9::1"));
    // An IPv6 rule never matches IPv4 clients, and vice versa.
    assert!(!allows(&p, "32.1.13.184"));
    let p = policy(&own(vec![rule("allow", None, &["0.0.0.0/0"])], None));
    assert!(!allows(&p, "2001:db8::1"));
}

#[test]
fn prefix_length_edges() {
    let p = policy(&own(vec![rule("allow", None, &["0.0.0.0/0"])], None));
    assert!(allows(&p, "0.0.0.0"));
    assert!(allows(&p, "255.255.255.255"));
    assert!(!allows(&p, "::1"));

    let p = policy(&own(vec![rule("allow", None, &["::/0"])], None));
    assert!(allows(&p, "::"));
    assert!(allows(&p, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
    assert!(!allows(&p, "192.0.2.1"));

    let p = policy(&own(vec![rule("allow", None, &["192.0.2.1/32"])], None));
    assert!(allows(&p, "192.0.2.1"));
    assert!(!allows(&p, "192.0.2.0"));
    assert!(!allows(&p, "192.0.2.2"));

    let p = policy(&own(vec![rule("allow", None, &["2001:db8::1/128"])], None));
    assert!(allows(&p, "2001:db8::1"));
    assert!(!allows(&p, "2001:db8::"));
    assert!(!allows(&p, "2001:db8::2"));
}

#[test]
fn counts_and_fingerprints() {
    let a = policy(&own(
        vec![
            rule(
                "allow",
                None,
                &["10.0.0.0/8", "10.0.0.0/8", " 2001:db8::/32 "],
            ),
            rule("deny", Some("direct_remote_ip"), &["192.0.2.0/24"]),
        ],
        None,
    ));
    assert_eq!(a.cidr_count(), 3, "duplicates within a rule collapse");
    let b = a.clone();
    assert_eq!(a.fingerprint(), b.fingerprint());
    let c = policy(&own(vec![rule("allow", None, &["10.0.0.0/8"])], None));
    assert_ne!(a.fingerprint(), c.fingerprint());
    assert_ne!(c.fingerprint(), AccessPolicy::allow_all().fingerprint());
    // Recompiling the same spec gives the same fingerprint.
    let again = policy(&own(vec![rule("allow", None, &["10.0.0.0/8"])], None));
    assert_eq!(c.fingerprint(), again.fingerprint());
    assert_eq!(c, again);
    let debug = format!("{a:?}");
    assert!(debug.contains("allow remote_ip (2 CIDRs)"), "{debug}");
    assert!(debug.contains("deny direct_remote_ip (1 CIDRs)"), "{debug}");
}

#[test]
fn cidr_set_basics() {
    let set = CidrSet::from_nets(
        [
            "10.0.0.0/8",
            "2001:db8::/32",
            "::ffff:192.0.2.0/120",
            "10.1.2.3/16",
        ]
        .iter()
        .map(|c| c.parse().unwrap()),
    );
    assert_eq!(set.len(), 4);
    assert!(!set.is_empty());
    assert!(set.contains(ip("10.200.0.1")));
    assert!(set.contains(ip("192.0.2.99")));
    assert!(set.contains(ip("::ffff:10.0.0.1")));
    assert!(set.contains(ip("2001:db8:ffff::1")));
    assert!(!set.contains(ip("11.0.0.1")));
    let listed: Vec<String> = set.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        listed,
        ["10.0.0.0/8", "10.1.0.0/16", "192.0.2.0/24", "2001:db8::/32"]
    );
    assert!(CidrSet::default().is_empty());
    assert!(!CidrSet::default().contains(ip("10.0.0.1")));
}
