//! A compiled allowlist ([`AccessPolicy`]) and its verdict for one connection
//! ([`Decision`]).
//!
//! Evaluation is a pure function of the policy and two addresses, so the proxy can call
//! it on accept and again for every open connection after a reload without any I/O.
//! Order of evaluation: no policy → allow; remote address in an always-allowed network →
//! allow (a cluster can always reach its own API server); then the rules in order, first
//! match wins; then the default action.

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use super::cidr::AddrKey;
use super::CidrSet;

/// What a rule or the default does with a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Let the connection through.
    Allow,
    /// Close the connection before TLS.
    Deny,
}

impl Action {
    /// Lower-case name, as used in apigate's own config, logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }

    /// Case-insensitive parse of `allow`/`deny` (Gardener writes `ALLOW`/`DENY`).
    pub(super) fn parse(text: &str) -> Option<Action> {
        if text.eq_ignore_ascii_case("allow") {
            Some(Action::Allow)
        } else if text.eq_ignore_ascii_case("deny") {
            Some(Action::Deny)
        } else {
            None
        }
    }

    pub(super) fn opposite(self) -> Action {
        match self {
            Action::Allow => Action::Deny,
            Action::Deny => Action::Allow,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which client address a rule matches, with the ACL extension's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressType {
    /// The client address the PROXY protocol carried (the TCP peer when there was none).
    RemoteIp,
    /// The TCP peer, i.e. usually the load balancer in front of apigate.
    DirectRemoteIp,
    /// Envoy's name for the same address as [`AddressType::RemoteIp`]; kept distinct only
    /// so logs show what the user wrote.
    SourceIp,
}

impl AddressType {
    /// The name as written in config (`remote_ip`, `direct_remote_ip`, `source_ip`).
    pub fn as_str(self) -> &'static str {
        match self {
            AddressType::RemoteIp => "remote_ip",
            AddressType::DirectRemoteIp => "direct_remote_ip",
            AddressType::SourceIp => "source_ip",
        }
    }

    /// Case-insensitive parse of the three names.
    pub(super) fn parse(text: &str) -> Option<AddressType> {
        [
            AddressType::RemoteIp,
            AddressType::DirectRemoteIp,
            AddressType::SourceIp,
        ]
        .into_iter()
        .find(|t| text.eq_ignore_ascii_case(t.as_str()))
    }

    /// Whether this type looks at the TCP peer rather than the PROXY-carried address.
    pub(super) fn is_direct(self) -> bool {
        self == AddressType::DirectRemoteIp
    }
}

impl fmt::Display for AddressType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a [`Decision`] came out the way it did, for denial logs and metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchReason {
    /// The remote address is in an always-allowed network (gateway-wide or the route's).
    AlwaysAllowed,
    /// Rule number `index` (zero-based, in the order written) matched.
    Rule {
        /// Position of the rule; always 0 for the Gardener spelling.
        index: usize,
        /// Which address the rule looked at.
        address_type: AddressType,
    },
    /// No rule matched; the default action applied.
    Default,
    /// The route has no allowlist: everyone may connect.
    NoPolicy,
}

/// The verdict for one connection, with its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny.
    pub action: Action,
    /// What decided it.
    pub reason: MatchReason,
}

impl Decision {
    /// Whether the connection may proceed.
    pub fn allowed(&self) -> bool {
        self.action == Action::Allow
    }
}

/// One compiled rule.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Rule {
    pub(super) action: Action,
    pub(super) address_type: AddressType,
    pub(super) cidrs: CidrSet,
}

/// The compiled body of a policy; shared behind an `Arc` so snapshots clone it cheaply.
#[derive(PartialEq, Eq)]
pub(super) struct Compiled {
    pub(super) always: CidrSet,
    pub(super) rules: Vec<Rule>,
    pub(super) default: Action,
    cidr_count: usize,
    fingerprint: u64,
}

/// A route's compiled source-IP allowlist. Cheap to clone (shared), immutable, and
/// evaluated with [`AccessPolicy::decide`].
#[derive(Clone)]
pub struct AccessPolicy(Option<Arc<Compiled>>);

impl AccessPolicy {
    /// The policy of a route without any ACL: everyone may connect.
    pub fn allow_all() -> AccessPolicy {
        AccessPolicy(None)
    }

    /// Build from compiled parts; the fingerprint is computed here, once, so snapshot
    /// diffs compare a number instead of tries.
    pub(super) fn new(always: CidrSet, rules: Vec<Rule>, default: Action) -> AccessPolicy {
        let cidr_count = rules.iter().map(|r| r.cidrs.len()).sum();
        let mut hash = DefaultHasher::new();
        1u8.hash(&mut hash);
        hash_set(&always, &mut hash);
        rules.len().hash(&mut hash);
        for rule in &rules {
            rule.action.hash(&mut hash);
            rule.address_type.hash(&mut hash);
            hash_set(&rule.cidrs, &mut hash);
        }
        default.hash(&mut hash);
        AccessPolicy(Some(Arc::new(Compiled {
            always,
            rules,
            default,
            cidr_count,
            fingerprint: hash.finish(),
        })))
    }

    pub(super) fn compiled(&self) -> Option<&Compiled> {
        self.0.as_deref()
    }

    /// Decide a connection. `direct` is the TCP peer; `remote` is the address the PROXY
    /// protocol carried, or the TCP peer again when there was no PROXY header. IPv4-mapped
    /// IPv6 addresses match IPv4 networks.
    #[inline]
    pub fn decide(&self, direct: IpAddr, remote: IpAddr) -> Decision {
        let Some(policy) = self.0.as_deref() else {
            return Decision {
                action: Action::Allow,
                reason: MatchReason::NoPolicy,
            };
        };
        let (direct, remote) = (AddrKey::from(direct), AddrKey::from(remote));
        if policy.always.contains_key(remote) {
            return Decision {
                action: Action::Allow,
                reason: MatchReason::AlwaysAllowed,
            };
        }
        for (index, rule) in policy.rules.iter().enumerate() {
            let ip = if rule.address_type.is_direct() {
                direct
            } else {
                remote
            };
            if rule.cidrs.contains_key(ip) {
                return Decision {
                    action: rule.action,
                    reason: MatchReason::Rule {
                        index,
                        address_type: rule.address_type,
                    },
                };
            }
        }
        Decision {
            action: policy.default,
            reason: MatchReason::Default,
        }
    }

    /// Number of CIDRs over all rules (distinct within each rule; always-allowed networks
    /// not counted), for metrics and the per-route limit. 0 without a policy.
    pub fn cidr_count(&self) -> usize {
        self.0.as_ref().map_or(0, |p| p.cidr_count)
    }

    /// A hash of the compiled content (always-allowed networks, rules, default), equal for
    /// equal policies whichever spelling produced them; for snapshot diffs and route
    /// fingerprints. Stable within one build of apigate, not across versions.
    pub fn fingerprint(&self) -> u64 {
        self.0.as_ref().map_or_else(
            || {
                let mut hash = DefaultHasher::new();
                0u8.hash(&mut hash);
                hash.finish()
            },
            |p| p.fingerprint,
        )
    }
}

impl PartialEq for AccessPolicy {
    /// Equal compiled content (not just equal fingerprints).
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => false,
        }
    }
}

impl Eq for AccessPolicy {}

fn hash_set(set: &CidrSet, hash: &mut DefaultHasher) {
    set.len().hash(hash);
    for net in set.iter() {
        net.hash(hash);
    }
}

impl fmt::Debug for AccessPolicy {
    /// A summary (rule actions, types and sizes), not the networks: a route may hold
    /// thousands.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(p) = self.0.as_deref() else {
            return f.write_str("AccessPolicy(allow all: no ACL)");
        };
        let rules: Vec<String> = p
            .rules
            .iter()
            .map(|r| format!("{} {} ({} CIDRs)", r.action, r.address_type, r.cidrs.len()))
            .collect();
        f.debug_struct("AccessPolicy")
            .field("always_allowed", &p.always.len())
            .field("rules", &rules)
            .field("default", &p.default.as_str())
            .field("fingerprint", &format_args!("{:016x}", p.fingerprint))
            .finish()
    }
}
