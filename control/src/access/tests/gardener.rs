//! Gardener's ACL extension `providerConfig`, pasted verbatim.

use super::*;
use crate::error::Problem;

fn parse(yaml: &str) -> Result<GardenerAclConfig, serde_yaml::Error> {
    serde_yaml::from_str(yaml)
}

#[test]
fn allow_rule_admits_its_cidrs_and_nobody_else() {
    let config = parse(
        r#"
rule:
  action: ALLOW
  type: remote_ip
  cidrs:
  - "1.2.3.0/24"
  - "2001:db8::/64"
"#,
    )
    .unwrap();
    let p = gardener_policy(&config, &["10.250.0.0/16"]);
    let d = p.decide(ip("10.0.0.1"), ip("1.2.3.4"));
    assert_eq!(
        d,
        Decision {
            action: Action::Allow,
            reason: MatchReason::Rule {
                index: 0,
                address_type: AddressType::RemoteIp
            }
        }
    );
    assert!(allows(&p, "2001:db8::5"));
    assert_eq!(
        p.decide(ip("10.0.0.1"), ip("5.6.7.8")),
        Decision {
            action: Action::Deny,
            reason: MatchReason::Default
        }
    );
    assert_eq!(
        p.decide(ip("10.0.0.1"), ip("10.250.9.9")).reason,
        MatchReason::AlwaysAllowed
    );
}

#[test]
fn deny_rule_blocks_its_cidrs_and_admits_everybody_else() {
    let config = parse(
        r#"
rule:
  action: DENY
  type: direct_remote_ip
  cidrs: ["198.51.100.0/24"]
"#,
    )
    .unwrap();
    let p = gardener_policy(&config, &["198.51.100.0/28"]);
    let d = p.decide(ip("198.51.100.77"), ip("203.0.113.1"));
    assert_eq!(d.action, Action::Deny);
    assert_eq!(
        d.reason,
        MatchReason::Rule {
            index: 0,
            address_type: AddressType::DirectRemoteIp
        }
    );
    assert_eq!(
        p.decide(ip("192.0.2.1"), ip("203.0.113.1")),
        Decision {
            action: Action::Allow,
            reason: MatchReason::Default
        }
    );
    // Always-allowed (by remote address) beats the DENY rule.
    assert_eq!(
        p.decide(ip("198.51.100.77"), ip("198.51.100.3")).reason,
        MatchReason::AlwaysAllowed
    );
}

#[test]
fn case_insensitive_values_and_ignored_api_version_kind() {
    let config = parse(
        r#"
apiVersion: acl.stackit.cloud/v1alpha1
kind: AclConfig
rule:
  action: allow
  type: Remote_IP
  cidrs: ["1.2.3.0/24"]
"#,
    )
    .unwrap();
    let p = gardener_policy(&config, &[]);
    assert_eq!(
        p.decide(ip("10.0.0.1"), ip("1.2.3.9")).reason,
        MatchReason::Rule {
            index: 0,
            address_type: AddressType::RemoteIp
        }
    );
    assert!(!allows(&p, "1.2.4.9"));
}

#[test]
fn both_spellings_compile_to_the_same_policy() {
    let gardener = gardener_policy(
        &parse("rule: {action: ALLOW, type: source_ip, cidrs: [\"1.2.3.0/24\"]}").unwrap(),
        &["10.250.0.0/16"],
    );
    let ours = policy_with(
        &serde_yaml::from_str(
            "rules: [{action: allow, type: source_ip, cidrs: [\"1.2.3.0/24\"]}]\ndefaultAction: deny",
        )
        .unwrap(),
        &["10.250.0.0/16"],
        &[],
    );
    assert_eq!(gardener, ours);
    assert_eq!(gardener.fingerprint(), ours.fingerprint());
    assert!(!gardener.may_tighten(&ours));
}

#[test]
fn unknown_fields_are_rejected() {
    for yaml in [
        "rule: {action: ALLOW, cidrs: [\"1.2.3.0/24\"]}\nrules: []",
        "rule: {action: ALLOW, cidr: [\"1.2.3.0/24\"]}",
        "rule: {action: ALLOW, cidrs: [\"1.2.3.0/24\"]}\nmetadata: {}",
    ] {
        let err = parse(yaml).unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{yaml}: {err}");
    }
    let err = serde_yaml::from_str::<AccessControlSpec>("rules: []\ndefault: deny")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field"), "{err}");
}

#[test]
fn provider_config_from_json() {
    let mut errors = Errors::default();
    let value = serde_json::json!({
        "apiVersion": "acl.stackit.cloud/v1alpha1",
        "rule": {"action": "ALLOW", "type": "remote_ip", "cidrs": ["1.2.3.0/24"]}
    });
    let config = parse_gardener_acl(value, &object(), "providerConfig", &mut errors).unwrap();
    assert_eq!(config.rule.cidrs, ["1.2.3.0/24"]);
    assert!(errors.is_empty());

    let value = serde_json::json!({"rule": {"action": "ALLOW", "cidrs": "1.2.3.0/24"}});
    assert!(parse_gardener_acl(value, &object(), "providerConfig", &mut errors).is_none());
    let errors = errors.into_vec();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].field, "providerConfig.rule.cidrs");
    assert!(matches!(errors[0].problem, Problem::Syntax(_)));
}
