//! Could a new policy deny a connection the old one allowed?
//!
//! The proxy re-checks every open connection of a route after a reload only when the
//! answer may be yes, so the answer must never be a wrong "no"; a wrong "yes" only costs a
//! re-check. Policies are reduced to one of three shapes, for which the question has a
//! sound set-inclusion answer; anything else answers "yes" unless the policies are equal.

use super::policy::{AccessPolicy, Action};
use super::CidrSet;

/// What a policy allows, reduced to sets of networks.
// Transient (one per call, on the stack); boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Shape {
    /// Everything is allowed.
    AllowAll,
    /// Allowed iff remote ∈ `remote` or direct ∈ `direct` (default deny, only allow
    /// rules). `remote` includes the always-allowed networks.
    AllowList { remote: CidrSet, direct: CidrSet },
    /// Denied iff remote ∉ `always` and (remote ∈ `remote` or direct ∈ `direct`)
    /// (default allow, only deny rules).
    DenyList {
        always: CidrSet,
        remote: CidrSet,
        direct: CidrSet,
    },
    /// Rules of both actions interleaved: no cheap exact answer.
    General,
}

fn shape(policy: &AccessPolicy) -> Shape {
    let Some(p) = policy.compiled() else {
        return Shape::AllowAll;
    };
    // Trailing rules with the default's action change nothing: drop them.
    let effective = p
        .rules
        .iter()
        .rposition(|r| r.action != p.default)
        .map_or(0, |last| last + 1);
    let rules = &p.rules[..effective];
    if rules.iter().any(|r| r.action == p.default) {
        return Shape::General;
    }
    let union = |direct: bool, extra: Option<&CidrSet>| {
        CidrSet::from_nets(
            rules
                .iter()
                .filter(|r| r.address_type.is_direct() == direct)
                .flat_map(|r| r.cidrs.iter())
                .chain(extra.into_iter().flat_map(|s| s.iter())),
        )
    };
    match p.default {
        Action::Deny => Shape::AllowList {
            remote: union(false, Some(&p.always)),
            direct: union(true, None),
        },
        Action::Allow if rules.is_empty() => Shape::AllowAll,
        Action::Allow => Shape::DenyList {
            always: p.always.clone(),
            remote: union(false, None),
            direct: union(true, None),
        },
    }
}

impl AccessPolicy {
    /// Whether `self` could deny an address that `old` allowed, i.e. whether open
    /// connections need re-checking after a reload. Exact for the common shapes (pure
    /// allowlists, pure denylists, no policy); `true` when unsure, but always `false` for
    /// equal policies.
    pub fn may_tighten(&self, old: &AccessPolicy) -> bool {
        may_tighten(self, old)
    }
}

fn may_tighten(new: &AccessPolicy, old: &AccessPolicy) -> bool {
    if new == old {
        return false;
    }
    match (shape(new), shape(old)) {
        (Shape::AllowAll, _) => false,
        // Everything old allowed must still be allowed by the same address.
        (
            Shape::AllowList { remote, direct },
            Shape::AllowList {
                remote: old_remote,
                direct: old_direct,
            },
        ) => !(remote.covers(&old_remote) && direct.covers(&old_direct)),
        // Everything new denies must have been denied already.
        (
            Shape::DenyList {
                always,
                remote,
                direct,
            },
            Shape::DenyList {
                always: old_always,
                remote: old_remote,
                direct: old_direct,
            },
        ) => {
            !(always.covers(&old_always)
                && old_remote.covers(&remote)
                && old_direct.covers(&direct))
        }
        _ => true,
    }
}
