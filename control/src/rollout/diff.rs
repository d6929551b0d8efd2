//! The typed difference between two revisions of policy, and which differences only
//! tighten access.
//!
//! **Tightening-only**, precisely: the new revision adds no route; it changes no
//! gateway setting that rolls out except `alwaysAllowedCIDRs`; every route it keeps
//! differs at most in its hostnames, CONNECT destinations and allowlist
//! (`accessControl`, `acl`, `alwaysAllowedCIDRs`); each kept route's hostnames and
//! destinations are a subset of before; and each kept route's compiled allowlist allows
//! no address (direct or PROXY-reported) that the old one denied. Removing routes is
//! tightening. Anything else, such as one route tightened and another loosened, or an
//! allowlist reshaped in a way that cannot be proven narrower, is not.

use std::collections::BTreeSet;

use crate::model::{ApiServerRoute, GatewayConfig};
use crate::snapshot::{RouteId, Snapshot};

use super::Desired;

/// A route-level field of policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteField {
    /// `spec.hostnames`.
    Hostnames,
    /// `spec.mode`.
    Mode,
    /// `spec.tls` (serving certificate and client CA paths).
    ServingTls,
    /// `spec.upstream` (CA, server name, front-proxy certificate paths).
    Upstream,
    /// `spec.balancing`.
    Balancing,
    /// `spec.accessControl`, `spec.acl`, `spec.alwaysAllowedCIDRs`.
    Access,
    /// `spec.destinations`.
    Destinations,
    /// `spec.health`.
    Health,
    /// `spec.flowControl`.
    FlowControl,
}

impl RouteField {
    /// Name for logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteField::Hostnames => "hostnames",
            RouteField::Mode => "mode",
            RouteField::ServingTls => "tls",
            RouteField::Upstream => "upstream",
            RouteField::Balancing => "balancing",
            RouteField::Access => "access",
            RouteField::Destinations => "destinations",
            RouteField::Health => "health",
            RouteField::FlowControl => "flowControl",
        }
    }

    /// Fields a tightening-only change may touch.
    fn may_tighten(self) -> bool {
        matches!(
            self,
            RouteField::Hostnames | RouteField::Access | RouteField::Destinations
        )
    }
}

/// A gateway-level field of policy (settings that apply at once are not compared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GatewayField {
    /// `spec.defaults`: reaches routes through their compiled settings.
    Defaults,
    /// `spec.access.alwaysAllowedCIDRs`: part of every route's allowlist.
    AlwaysAllowedCidrs,
    /// `spec.connect.destinationHeader`: gateway-wide.
    DestinationHeader,
}

impl GatewayField {
    /// Name for logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayField::Defaults => "defaults",
            GatewayField::AlwaysAllowedCidrs => "alwaysAllowedCIDRs",
            GatewayField::DestinationHeader => "destinationHeader",
        }
    }
}

/// One route kept with changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteChange {
    /// The route.
    pub id: RouteId,
    /// What changed, in a stable order.
    pub fields: Vec<RouteField>,
}

/// What a new revision of policy changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyDiff {
    /// Routes only in the new revision.
    pub added: Vec<RouteId>,
    /// Routes only in the old revision.
    pub removed: Vec<RouteId>,
    /// Routes in both with a different policy.
    pub changed: Vec<RouteChange>,
    /// Gateway settings that changed.
    pub gateway: Vec<GatewayField>,
}

impl PolicyDiff {
    /// True when the policy did not change (only what applies at once may have).
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.gateway.is_empty()
    }

    /// Whether the change only tightens access (see the module documentation), given
    /// both revisions compiled.
    pub fn tightens_only(&self, old: &Snapshot, new: &Snapshot) -> bool {
        if self.is_empty() || !self.added.is_empty() {
            return false;
        }
        if self
            .gateway
            .iter()
            .any(|f| *f != GatewayField::AlwaysAllowedCidrs)
        {
            return false;
        }
        if self
            .changed
            .iter()
            .any(|c| c.fields.iter().any(|f| !f.may_tighten()))
        {
            return false;
        }
        new.routes.iter().all(|after| {
            let Some(before) = old.route(&after.id) else {
                return false;
            };
            subset(&after.hostnames, &before.hostnames)
                && subset(&after.destinations, &before.destinations)
                // "Could the old policy deny an address the new one allows?" No means
                // the new one allows nothing the old one denied.
                && !before.access.may_tighten(&after.access)
        })
    }
}

fn subset(small: &[String], big: &[String]) -> bool {
    let big: BTreeSet<&String> = big.iter().collect();
    small.iter().all(|s| big.contains(s))
}

impl Desired {
    /// What `self` changes relative to `old`.
    pub fn diff(&self, old: &Desired) -> PolicyDiff {
        let added = self
            .routes
            .keys()
            .filter(|id| !old.routes.contains_key(id))
            .cloned()
            .collect();
        let removed = old
            .routes
            .keys()
            .filter(|id| !self.routes.contains_key(id))
            .cloned()
            .collect();
        let changed = self
            .routes
            .iter()
            .filter_map(|(id, new)| {
                let fields = route_fields(old.routes.get(id)?, new);
                (!fields.is_empty()).then(|| RouteChange {
                    id: id.clone(),
                    fields,
                })
            })
            .collect();
        let gateway = match (&old.gateway, &self.gateway) {
            (Some(old), Some(new)) => gateway_fields(old, new),
            (None, None) => Vec::new(),
            _ => vec![GatewayField::Defaults],
        };
        PolicyDiff {
            added,
            removed,
            changed,
            gateway,
        }
    }

    /// `self` (the revision served where a rollout has not arrived) with a
    /// tightening-only change from `old` to `new` applied: removed routes removed, and
    /// each tightened field copied from `new`. `None` when a tightened field differs
    /// between `self` and `old` (the rollout in progress changes that same field), so
    /// the tightening cannot be separated from it.
    pub fn transplant(&self, old: &Desired, new: &Desired, diff: &PolicyDiff) -> Option<Desired> {
        let mut out = self.clone();
        out.changed();
        for id in &diff.removed {
            out.routes.remove(id);
        }
        for change in &diff.changed {
            let (Some(mine), Some(was), Some(now)) = (
                out.routes.get_mut(&change.id),
                old.routes.get(&change.id),
                new.routes.get(&change.id),
            ) else {
                // Not served here: nothing to tighten.
                continue;
            };
            let mine = std::sync::Arc::make_mut(mine);
            for field in &change.fields {
                match field {
                    RouteField::Hostnames if mine.spec.hostnames == was.spec.hostnames => {
                        mine.spec.hostnames = now.spec.hostnames.clone();
                    }
                    RouteField::Destinations if mine.spec.destinations == was.spec.destinations => {
                        mine.spec.destinations = now.spec.destinations.clone();
                    }
                    RouteField::Access if same_access(mine, was) => {
                        mine.spec.access_control = now.spec.access_control.clone();
                        mine.spec.acl = now.spec.acl.clone();
                        mine.spec.always_allowed_cidrs = now.spec.always_allowed_cidrs.clone();
                    }
                    _ => return None,
                }
            }
        }
        if diff.gateway.contains(&GatewayField::AlwaysAllowedCidrs) {
            let (Some(mine), Some(was), Some(now)) = (
                out.gateway.as_mut(),
                old.gateway.as_ref(),
                new.gateway.as_ref(),
            ) else {
                return None;
            };
            if mine.spec.access.always_allowed_cidrs != was.spec.access.always_allowed_cidrs {
                return None;
            }
            mine.spec.access.always_allowed_cidrs = now.spec.access.always_allowed_cidrs.clone();
        }
        Some(out)
    }
}

fn same_access(a: &ApiServerRoute, b: &ApiServerRoute) -> bool {
    a.spec.access_control == b.spec.access_control
        && a.spec.acl == b.spec.acl
        && a.spec.always_allowed_cidrs == b.spec.always_allowed_cidrs
}

pub(super) fn route_fields(old: &ApiServerRoute, new: &ApiServerRoute) -> Vec<RouteField> {
    let (o, n) = (&old.spec, &new.spec);
    let mut fields = Vec::new();
    let mut check = |differs: bool, field| {
        if differs {
            fields.push(field);
        }
    };
    check(o.hostnames != n.hostnames, RouteField::Hostnames);
    check(o.mode != n.mode, RouteField::Mode);
    check(o.tls != n.tls, RouteField::ServingTls);
    check(o.upstream != n.upstream, RouteField::Upstream);
    check(o.balancing != n.balancing, RouteField::Balancing);
    check(!same_access(old, new), RouteField::Access);
    check(o.destinations != n.destinations, RouteField::Destinations);
    check(o.health != n.health, RouteField::Health);
    check(o.flow_control != n.flow_control, RouteField::FlowControl);
    fields
}

fn gateway_fields(old: &GatewayConfig, new: &GatewayConfig) -> Vec<GatewayField> {
    let (o, n) = (&old.spec, &new.spec);
    let mut fields = Vec::new();
    if o.defaults != n.defaults {
        fields.push(GatewayField::Defaults);
    }
    if o.access.always_allowed_cidrs != n.access.always_allowed_cidrs {
        fields.push(GatewayField::AlwaysAllowedCidrs);
    }
    if o.connect != n.connect {
        fields.push(GatewayField::DestinationHeader);
    }
    fields
}
