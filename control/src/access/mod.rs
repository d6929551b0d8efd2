//! Source-IP allowlists: the pure core of apigate's ACL gate.
//!
//! A route's allowlist is written in one of two spellings: Gardener's ACL
//! extension `providerConfig` (`acl`, one ALLOW or DENY rule, pasted verbatim) or apigate's
//! own form (`accessControl`, ordered rules, first match wins, a default action). Both
//! compile ([`compile_policy`]) into the same [`AccessPolicy`], which the proxy evaluates
//! for each connection with [`AccessPolicy::decide`] before TLS.
//!
//! Semantics, in evaluation order:
//! 1. a route without an allowlist admits everyone ([`MatchReason::NoPolicy`]);
//! 2. a remote address inside an always-allowed network — gateway-wide (seed node/pod
//!    networks, operator additions) or the route's own (the cluster's nodes and egress) —
//!    is admitted, so a cluster can always reach its own API server, even under DENY;
//! 3. the rules in order; each matches `remote_ip`/`source_ip` (the PROXY-protocol
//!    address, else the TCP peer) or `direct_remote_ip` (the TCP peer);
//! 4. the default action (Gardener: the opposite of the rule's action).
//!
//! Matching uses a prefix trie per rule, built once per snapshot ([`CidrSet`]): lookup
//! cost is bounded by the address width, not the number of CIDRs. Nothing here does I/O.

mod cidr;
mod compile;
mod policy;
mod spec;
mod tighten;
mod trie;

pub use cidr::{compile_cidrs, CidrSet};
pub use compile::compile_policy;
pub use policy::{AccessPolicy, Action, AddressType, Decision, MatchReason};
pub use spec::{parse_gardener_acl, AccessControlSpec, GardenerAclConfig, RuleSpec};

#[cfg(test)]
mod tests;
